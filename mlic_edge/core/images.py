"""Input discovery and overlapped decoding for `infer`: decode + preprocess run in a thread pool
while the model runs on the previous batch (PIL decoding and numpy release the GIL), so a fast
backend is not left waiting on JPEG decoding.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

from .errors import DatasetError
from .preprocess import load_image, preprocess, preprocess_args

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def list_inputs(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image paths from an image file, a folder (image suffixes; --recursive descends) or a .txt
    list (one path per line, relative to the list's folder; blank lines and # comments skipped).
    Files are not opened here: undecodable ones are reported when decoded."""
    path = Path(path)
    if path.is_dir():
        walk = path.rglob("*") if recursive else path.iterdir()
        files = sorted(p for p in walk if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DatasetError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)"
                               + ("" if recursive else "; --recursive searches subfolders"))
        return files
    if not path.exists():
        raise DatasetError(f"{path}: no such image, folder or list file")
    if path.suffix.lower() == ".txt":
        files = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                item = Path(line).expanduser()
                files.append(item if item.is_absolute() else path.parent / item)
        if not files:
            raise DatasetError(f"{path}: the list names no images")
        return files
    return [path]


@dataclass
class Batch:
    """Decoded images of one batch, in input order; failures keep their place via `index`."""
    indices: list[int] = field(default_factory=list)         # input positions of the good images
    paths: list[Path] = field(default_factory=list)
    images: np.ndarray | None = None                         # float32 (n, 3, S, S)
    originals: list[Image.Image | None] = field(default_factory=list)
    failures: list[tuple[int, Path, str]] = field(default_factory=list)  # (index, path, message)


def _decode(path: Path, args: tuple, keep_original: bool):
    image = load_image(path)  # DatasetError (one line, names the file) on missing/undecodable data
    array = preprocess(image, *args)                               # (3, S, S)
    return array, (image if keep_original else None)


def iter_batches(paths: Sequence[Path], spec: dict, batch_size: int, *, workers: int = 4,
                 prefetch_batches: int = 2, keep_originals: bool = False) -> Iterator[Batch]:
    """Yield Batches of up to `batch_size` decoded images, in order. Up to `prefetch_batches`
    batches are decoded ahead by `workers` threads while the caller runs the model."""
    args = preprocess_args(spec)
    size = args[0]
    window = max(batch_size * (prefetch_batches + 1), 1)
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="mlic-decode") as pool:
        pending: deque[tuple[int, Path, Future]] = deque()
        position = 0

        def fill() -> None:
            nonlocal position
            while position < len(paths) and len(pending) < window:
                path = Path(paths[position])
                pending.append((position, path, pool.submit(_decode, path, args, keep_originals)))
                position += 1

        fill()
        while pending:
            batch = Batch()
            arrays = []
            while pending and len(batch.indices) + len(batch.failures) < batch_size:
                index, path, future = pending.popleft()
                try:
                    array, original = future.result()
                except DatasetError as e:
                    batch.failures.append((index, path, str(e)))
                except Exception as e:  # decoder bugs on hostile files must not stop the run
                    batch.failures.append((index, path, f"{path}: {type(e).__name__}: {e}"))
                else:
                    batch.indices.append(index)
                    batch.paths.append(path)
                    batch.originals.append(original)
                    arrays.append(array)
                fill()
            batch.images = np.stack(arrays) if arrays else np.empty((0, 3, size, size), np.float32)
            yield batch
