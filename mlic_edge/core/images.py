"""Input discovery and overlapped decoding for `infer`, `parity` and calibration: decode +
preprocess run in a thread pool while the model runs on the previous batch (PIL decoding and numpy
release the GIL), so a fast backend is not left waiting on JPEG decoding. Inputs are listed and
consumed lazily: a folder of 100,000 images costs its sorted names, not 100,000 decoded images.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

from .errors import DatasetError
from .preprocess import Preprocessing, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def iter_inputs(path: str | os.PathLike, recursive: bool = False) -> Iterator[Path]:
    """Image paths from an image file, a folder (image suffixes; --recursive descends) or a .txt
    list (one path per line, relative to the list's folder; blank lines and # comments skipped),
    yielded lazily in a fixed order: a list in its own order, a folder sorted by name (subfolders
    where their names sort, so the order equals sorting the full paths), walked one folder at a
    time. Files are not opened here: undecodable ones are reported when decoded."""
    path = Path(path)
    if path.is_dir():
        yield from (_walk_sorted(path) if recursive else _folder_images(path))
        return
    if not path.exists():
        raise DatasetError(f"{path}: no such image, folder or list file")
    if path.suffix.lower() == ".txt":
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    item = Path(line).expanduser()
                    yield item if item.is_absolute() else path.parent / item
        return
    yield path


def _is_image(entry: os.DirEntry) -> bool:
    return os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()


def _folder_images(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries if _is_image(entry))   # names only: small
    for name in names:
        yield folder / name


def _walk_sorted(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        found = sorted((entry.name, entry.is_dir(), _is_image(entry)) for entry in entries)
    for name, is_dir, is_image in found:
        if is_dir:
            yield from _walk_sorted(folder / name)
        elif is_image:
            yield folder / name


def count_inputs(path: str | os.PathLike, recursive: bool = False) -> int:
    """How many paths `iter_inputs` yields (one pass, nothing kept); DatasetError when none."""
    path = Path(path)
    count = sum(1 for _ in iter_inputs(path, recursive))
    if count == 0:
        if path.is_dir():
            raise DatasetError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)"
                               + ("" if recursive else "; --recursive searches subfolders"))
        raise DatasetError(f"{path}: the list names no images")
    return count


def list_inputs(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """`iter_inputs` as a list; DatasetError when it names no image."""
    files = list(iter_inputs(path, recursive))
    if not files:
        count_inputs(path, recursive)                         # raises the one-line error
    return files


@dataclass
class Decoded:
    """One input after decoding, in input order: `value` on success, `error` (one line) if not."""
    index: int
    item: Any
    value: Any = None
    error: str | None = None


def iter_decoded(items: Iterable, decode: Callable[[Any], Any], *, workers: int = 2,
                 window: int = 32) -> Iterator[Decoded]:
    """`decode(item)` for every item, run by `workers` threads up to `window` items ahead of the
    consumer, yielded in input order. `items` is consumed lazily, so memory holds the window, not
    the input list. A DatasetError (one line, names the file) or any other exception from a
    hostile file becomes `Decoded.error`; the run goes on."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="mlic-decode") as pool:
        pending: deque[tuple[int, Any, Future]] = deque()
        position = 0

        def fill() -> None:
            nonlocal position
            while len(pending) < max(window, 1):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                pending.append((position, item, pool.submit(decode, item)))
                position += 1

        try:
            fill()
            while pending:
                index, item, future = pending.popleft()
                try:
                    yield Decoded(index, item, value=future.result())
                except DatasetError as e:
                    yield Decoded(index, item, error=str(e))
                except Exception as e:  # decoder bugs on hostile files must not stop the run
                    yield Decoded(index, item, error=f"{item}: {type(e).__name__}: {e}")
                fill()
        finally:
            for _, _, future in pending:                     # stopped early: drop the work queued
                future.cancel()


def batched(decoded: Iterable[Decoded], batch_size: int) -> Iterator[list[Decoded]]:
    """Consecutive groups of `batch_size` inputs (failures included), so batch k always holds
    inputs k*B .. (k+1)*B-1 whatever failed: a resumed job meets the same batches."""
    group: list[Decoded] = []
    for one in decoded:
        group.append(one)
        if len(group) == batch_size:
            yield group
            group = []
    if group:
        yield group


@dataclass
class Batch:
    """Decoded images of one batch, in input order; failures keep their place via `index`."""
    indices: list[int] = field(default_factory=list)         # input positions of the good images
    paths: list[Path] = field(default_factory=list)
    images: np.ndarray | None = None                         # float32 (n, 3, S, S)
    originals: list[Image.Image | None] = field(default_factory=list)
    failures: list[tuple[int, Path, str]] = field(default_factory=list)  # (index, path, message)


def _decode(path: Path, preprocessing: Preprocessing, keep_original: bool):
    image = load_image(path, reduce_to=preprocessing.image_size)  # DatasetError (one line, names the file) on bad data
    array = preprocessing(image)                                   # (3, S, S)
    return array, (image if keep_original else None)


def iter_batches(paths: Iterable[Path], spec: dict | Preprocessing, batch_size: int, *, workers: int = 4,
                 prefetch_batches: int = 2, keep_originals: bool = False) -> Iterator[Batch]:
    """Yield Batches of up to `batch_size` decoded images, in order. Up to `prefetch_batches`
    batches are decoded ahead by `workers` threads while the caller runs the model."""
    preprocessing = Preprocessing.from_dict(spec)
    size = preprocessing.image_size
    decoded = iter_decoded((Path(p) for p in paths), lambda path: _decode(path, preprocessing, keep_originals),
                           workers=workers, window=batch_size * (prefetch_batches + 1))
    for group in batched(decoded, batch_size):
        batch = Batch()
        arrays = []
        for one in group:
            if one.error is not None:
                batch.failures.append((one.index, one.item, one.error))
                continue
            array, original = one.value
            batch.indices.append(one.index)
            batch.paths.append(one.item)
            batch.originals.append(original)
            arrays.append(array)
        batch.images = np.stack(arrays) if arrays else np.empty((0, 3, size, size), np.float32)
        yield batch
