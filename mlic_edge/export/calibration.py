"""Calibration images for INT8: real images through the model's own preprocessing, cached.

Sources: a folder of images (searched recursively) or a dataset (`mlic_edge.data.build_dataset`).
N images (default 500) are drawn with a fixed seed, preprocessed with the checkpoint's preprocess
spec (the exact pixels the runtime will feed) and cached as one .npy under
`$MLIC_EDGE_CACHE/calib` (default ~/.cache/mlic-edge/calib), keyed by a hash of
(source and its file list, N, preprocess, seed): a changed folder or spec rebuilds the cache.

Memory does not grow with N: images are preprocessed and written to the cache one at a time, and
the calibrators read it back one batch at a time with plain file reads (`CalibrationSet`), so
neither the whole set nor a memory map's pages stay resident (500 images at 448 px are 1.2 GB).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import cache_dir
from ..core.images import IMAGE_SUFFIXES, iter_batches
from ..core.errors import CalibrationError
from ..core.preprocess import Preprocessing

log = logging.getLogger(__name__)

CACHE_FORMAT = "mlic-edge-calib/2"  # bump when the selection or layout changes (2: streamed .npy)


class CalibrationSet:
    """N preprocessed images (N, 3, S, S) float32, handed out one batch at a time.

    On disk: a .npy file read with seek + fromfile per batch. In memory: an array the caller gave
    (already resident). `np.asarray(cset)` loads everything (tests, small sets)."""

    def __init__(self, path: str | os.PathLike | None = None, array: np.ndarray | None = None):
        if (path is None) == (array is None):
            raise ValueError("CalibrationSet takes a .npy path or an array")
        self.path = Path(path) if path is not None else None
        self._array = None if array is None else np.ascontiguousarray(array, dtype=np.float32)
        if self.path is not None:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                self._offset = f.tell()
            if fortran or dtype != np.float32 or len(shape) != 4:
                raise CalibrationError(f"{self.path}: not a calibration cache (shape {shape}, {dtype})")
            self.shape = tuple(int(d) for d in shape)
            expected = self._offset + int(np.prod(self.shape)) * 4
            if self.path.stat().st_size != expected:
                raise CalibrationError(f"{self.path}: truncated calibration cache")
        else:
            self.shape = tuple(self._array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images [start, stop) as a new (stop - start, 3, S, S) float32 array."""
        stop = min(stop, len(self))
        if self._array is not None:
            return self._array[start:stop]
        per_image = int(np.prod(self.shape[1:]))
        with open(self.path, "rb") as f:
            f.seek(self._offset + start * per_image * 4)
            data = np.fromfile(f, dtype=np.float32, count=(stop - start) * per_image)
        return data.reshape((stop - start, *self.shape[1:]))

    def batches(self, step: int, count: int | None = None) -> Iterator[np.ndarray]:
        """Batches of `step` images over the first `count` (default all)."""
        count = len(self) if count is None else count
        for start in range(0, count, step):
            yield self.read(start, min(start + step, count))

    def __array__(self, dtype=None, copy=None):
        data = self.read(0, len(self))
        return data if dtype is None else data.astype(dtype)


@dataclass(frozen=True)
class DatasetSource:
    """Calibration from a dataset: `build_dataset(name, root, split)`."""
    name: str
    root: str | None
    split: str = "train"


def default_cache_dir() -> Path:
    return cache_dir("calib")


def _pick(count: int, n: int, seed: int) -> list[int]:
    """Indices of n of count items: all when n >= count, else a seeded sample kept in order."""
    if n >= count:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=n, replace=False).tolist())


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: calibration folder not found")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CalibrationError(f"{folder}: calibration folder has no images "
                               f"({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    return files


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _write_npy(path: Path, images: Iterator[np.ndarray], tail: tuple[int, ...]) -> None:
    """Stream (3, S, S) images into `path` (.npy), atomically: raw rows first (the count is known
    only at the end: unreadable images are skipped), then header + rows into a temp file, renamed."""
    raw = path.with_name(f"{path.name}.{os.getpid()}.raw")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    count = 0
    try:
        with open(raw, "wb") as out:
            for image in images:
                out.write(np.ascontiguousarray(image, dtype=np.float32).tobytes())
                count += 1
        if count == 0:
            raise CalibrationError("none of the calibration images could be read")
        with open(tmp, "wb") as out, open(raw, "rb") as rows:
            np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                       "fortran_order": False, "shape": (count, *tail)})
            shutil.copyfileobj(rows, out, 16 * 2 ** 20)
        os.replace(tmp, path)
    finally:
        raw.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _cached(key: str, cache_dir: Path | None, images: Iterator[np.ndarray], tail: tuple[int, ...]) -> CalibrationSet:
    """The calibration set for `key`: from the cache when there, else `images` streamed into it.
    Without a cache folder the images are stacked in memory."""
    if cache_dir is None:
        arrays = list(images)
        if not arrays:
            raise CalibrationError("none of the calibration images could be read")
        return CalibrationSet(array=np.stack(arrays))
    path = Path(cache_dir) / f"calib-{key[:20]}.npy"
    if path.is_file():
        try:
            cached = CalibrationSet(path)
            log.info("calibration tensors from cache %s", path)
            return cached
        except (CalibrationError, OSError, ValueError):  # corrupt cache file: rebuild it
            log.warning("ignoring unreadable calibration cache %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_npy(path, images, tail)
    return CalibrationSet(path)


def calibration_from_folder(folder: str | os.PathLike, preprocess: dict[str, Any], num_images: int = 500,
                            *, seed: int = 0, cache_dir: Path | None | str = "default") -> CalibrationSet:
    """(N, 3, S, S) float32 from up to `num_images` images of `folder` (recursive)."""
    folder = Path(folder).resolve()
    files = list_images(folder)
    chosen = [files[i] for i in _pick(len(files), num_images, seed)]
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in chosen]
    key = _hash({"format": CACHE_FORMAT, "source": f"folder:{folder}", "files": stats,
                 "n": num_images, "preprocess": preprocess, "seed": seed})
    size = Preprocessing.from_dict(preprocess).image_size

    def images() -> Iterator[np.ndarray]:
        with progress(len(chosen), "preprocessing calibration images") as bar:
            for batch in iter_batches(chosen, preprocess, 16):          # the image source `infer` reads
                for _, _, message in batch.failures:
                    log.warning("%s; skipping it", message)
                yield from batch.images
                bar.update(len(batch.indices) + len(batch.failures))

    try:
        return _cached(key, _cache_dir(cache_dir), images(), (3, size, size))
    except CalibrationError:
        raise CalibrationError(f"{folder}: none of its {len(chosen)} images could be read") from None


def calibration_from_dataset(source: DatasetSource, preprocess: dict[str, Any], num_images: int = 500,
                             *, seed: int = 0, cache_dir: Path | None | str = "default") -> CalibrationSet:
    """(N, 3, S, S) float32 from `num_images` images of a dataset split, eval preprocessing."""
    from ..data import build_dataset, dataset_batches
    from ..data.transforms import build_transform

    dataset = build_dataset(source.name, source.root, source.split, build_transform(preprocess, train=False))
    if len(dataset) == 0:
        raise CalibrationError(f"dataset {source.name} ({source.root}, split {source.split}) has no images")
    chosen = _pick(len(dataset), num_images, seed)
    root = str(Path(source.root).resolve()) if source.root else None
    key = _hash({"format": CACHE_FORMAT, "source": f"dataset:{source.name}:{root}:{source.split}",
                 "count": len(dataset), "ids": [str(dataset.ids[i]) for i in chosen] if hasattr(dataset, "ids") else None,
                 "n": num_images, "preprocess": preprocess, "seed": seed})

    def images() -> Iterator[np.ndarray]:
        with progress(len(chosen), "preprocessing calibration images") as bar:
            for batch, _ in dataset_batches(dataset, 16, indices=chosen):
                yield from batch
                bar.update(len(batch))

    size = Preprocessing.from_dict(preprocess).image_size
    try:
        return _cached(key, _cache_dir(cache_dir), images(), (3, size, size))
    except CalibrationError:
        raise CalibrationError(f"dataset {source.name} ({source.root}): no readable image among "
                               f"{len(chosen)} calibration picks") from None


def progress(total: int, what: str):
    """The calibration stages' tqdm bar (images done / total), a no-op for small sets and with
    $MLIC_EDGE_NO_PROGRESS. It writes to the process's real stderr (Model Optimizer, quiet
    while it converts, redirects sys.stderr)."""
    import sys

    from tqdm import tqdm
    quiet = total < 64 or bool(os.environ.get("MLIC_EDGE_NO_PROGRESS"))
    return tqdm(total=total, desc=what, unit="img", leave=False, mininterval=1.0, disable=quiet,
                file=sys.__stderr__)


def _cache_dir(value: Path | None | str) -> Path | None:
    if value == "default":
        return default_cache_dir()
    return None if value is None else Path(value)


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def collect_calibration(calib: Any, preprocess: dict[str, Any], num_images: int = 500, *,
                        seed: int = 0, cache_dir: Path | None | str = "default") -> CalibrationSet:
    """Normalise any accepted calibration source to one (N, 3, S, S) float32 CalibrationSet.

    calib: an array/tensor (N, 3, S, S) (used as is, first num_images); a folder of images;
    a DatasetSource (or a dict {"data"/"name", "root", "split"}); or an iterable of batches
    (arrays/tensors, or (images, targets) tuples, e.g. a DataLoader).
    """
    size = Preprocessing.from_dict(preprocess).image_size
    if calib is None:
        raise CalibrationError("int8 needs calibration images: pass a folder (--calib DIR) or a "
                               "dataset (--calib-data NAME --calib-root PATH)")
    if isinstance(calib, (str, os.PathLike)):
        images = calibration_from_folder(calib, preprocess, num_images, seed=seed, cache_dir=cache_dir)
    elif isinstance(calib, dict):
        name = calib.get("data", calib.get("name"))
        images = calibration_from_dataset(DatasetSource(name, calib.get("root"), calib.get("split", "train")),
                                          preprocess, num_images, seed=seed, cache_dir=cache_dir)
    elif isinstance(calib, DatasetSource):
        images = calibration_from_dataset(calib, preprocess, num_images, seed=seed, cache_dir=cache_dir)
    elif isinstance(calib, CalibrationSet):
        images = calib
    elif isinstance(calib, np.ndarray) or hasattr(calib, "detach"):
        images = CalibrationSet(array=_as_array(calib)[:num_images])
    elif isinstance(calib, Iterable):
        batches, total = [], 0
        for batch in calib:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            array = _as_array(batch)
            if array.ndim == 3:
                array = array[None]
            batches.append(array)
            total += len(array)
            if total >= num_images:
                break
        if not batches:
            raise CalibrationError("the calibration loader yielded no images")
        images = CalibrationSet(array=np.concatenate(batches)[:num_images])
    else:
        raise CalibrationError(f"unsupported calibration source of type {type(calib).__name__}")
    if len(images.shape) != 4 or images.shape[1:] != (3, size, size):
        raise CalibrationError(f"calibration images must be (N, 3, {size}, {size}); got {tuple(images.shape)}")
    if len(images) == 0:
        raise CalibrationError("no calibration images")
    if len(images) < 32:
        log.warning("only %d calibration images: INT8 ranges may be poor (hundreds recommended)", len(images))
    return images
