"""Calibration images for INT8: real images through the model's own preprocessing, cached.

Sources: a folder of images (searched recursively) or a dataset (`mlic_edge.data.build_dataset`).
N images (default 500) are drawn with a fixed seed, preprocessed with the checkpoint's preprocess
spec (the exact pixels the runtime will feed) and cached as one .npz under
`$MLIC_EDGE_CACHE/calib` (default ~/.cache/mlic-edge/calib), keyed by a hash of
(source and its file list, N, preprocess, seed): a changed folder or spec rebuilds the cache.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..runtime.files import cache_dir
from ..runtime.images import IMAGE_SUFFIXES
from .errors import CalibrationError

log = logging.getLogger(__name__)

CACHE_FORMAT = "mlic-edge-calib/1"  # bump when the selection or layout changes


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


def _cached(key: str, cache_dir: Path | None, build) -> np.ndarray:
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"calib-{key[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                log.info("calibration tensors from cache %s", path)
                return data["images"]
        except Exception:  # corrupt cache file: rebuild it
            log.warning("ignoring unreadable calibration cache %s", path)
    images = build()
    from ..runtime.files import atomic_write_bytes
    buffer = io.BytesIO()
    np.savez(buffer, images=images, key=np.array(key))
    atomic_write_bytes(path, buffer.getvalue())
    return images


def calibration_from_folder(folder: str | os.PathLike, preprocess: dict[str, Any], num_images: int = 500,
                            *, seed: int = 0, cache_dir: Path | None | str = "default") -> np.ndarray:
    """(N, 3, S, S) float32 from up to `num_images` images of `folder` (recursive)."""
    from ..runtime.preprocess import load_image, preprocess as preprocess_image, preprocess_args

    folder = Path(folder).resolve()
    files = list_images(folder)
    chosen = [files[i] for i in _pick(len(files), num_images, seed)]
    stats = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in chosen]
    key = _hash({"format": CACHE_FORMAT, "source": f"folder:{folder}", "files": stats,
                 "n": num_images, "preprocess": preprocess, "seed": seed})
    size, mean, std, interpolation = preprocess_args(preprocess)

    def build() -> np.ndarray:
        arrays = []
        for path in chosen:
            try:
                arrays.append(preprocess_image(load_image(path), size, mean, std, interpolation))
            except DatasetError as e:
                log.warning("%s; skipping it", e)
        if not arrays:
            raise CalibrationError(f"{folder}: none of its {len(chosen)} images could be read")
        return np.stack(arrays).astype(np.float32)

    return _cached(key, _cache_dir(cache_dir), build)


def calibration_from_dataset(source: DatasetSource, preprocess: dict[str, Any], num_images: int = 500,
                             *, seed: int = 0, cache_dir: Path | None | str = "default") -> np.ndarray:
    """(N, 3, S, S) float32 from `num_images` images of a dataset split, eval preprocessing."""
    from ..data import build_dataset
    from ..data.transforms import build_transform

    dataset = build_dataset(source.name, source.root, source.split, build_transform(preprocess, train=False))
    if len(dataset) == 0:
        raise CalibrationError(f"dataset {source.name} ({source.root}, split {source.split}) has no images")
    chosen = _pick(len(dataset), num_images, seed)
    root = str(Path(source.root).resolve()) if source.root else None
    key = _hash({"format": CACHE_FORMAT, "source": f"dataset:{source.name}:{root}:{source.split}",
                 "count": len(dataset), "ids": [str(dataset.ids[i]) for i in chosen] if hasattr(dataset, "ids") else None,
                 "n": num_images, "preprocess": preprocess, "seed": seed})

    def build() -> np.ndarray:
        arrays = [item[0].numpy() for item in (dataset[i] for i in chosen) if item is not None]
        if not arrays:
            raise CalibrationError(f"dataset {source.name} ({source.root}): no readable image among "
                                   f"{len(chosen)} calibration picks")
        return np.stack(arrays).astype(np.float32)

    return _cached(key, _cache_dir(cache_dir), build)


def _cache_dir(value: Path | None | str) -> Path | None:
    if value == "default":
        return default_cache_dir()
    return None if value is None else Path(value)


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def collect_calibration(calib: Any, preprocess: dict[str, Any], num_images: int = 500, *,
                        seed: int = 0, cache_dir: Path | None | str = "default") -> np.ndarray:
    """Normalise any accepted calibration source to one float32 (N, 3, S, S) array.

    calib: an array/tensor (N, 3, S, S) (used as is, first num_images); a folder of images;
    a DatasetSource (or a dict {"data"/"name", "root", "split"}); or an iterable of batches
    (arrays/tensors, or (images, targets) tuples, e.g. a DataLoader).
    """
    size = int(preprocess["image_size"])
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
    elif isinstance(calib, np.ndarray) or hasattr(calib, "detach"):
        images = _as_array(calib)[:num_images]
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
        images = np.concatenate(batches)[:num_images]
    else:
        raise CalibrationError(f"unsupported calibration source of type {type(calib).__name__}")
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise CalibrationError(f"calibration images must be (N, 3, {size}, {size}); got {tuple(images.shape)}")
    if len(images) == 0:
        raise CalibrationError("no calibration images")
    if len(images) < 32:
        log.warning("only %d calibration images: INT8 ranges may be poor (hundreds recommended)", len(images))
    return np.ascontiguousarray(images, dtype=np.float32)
