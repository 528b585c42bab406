"""`build_dataset`: one entry point from a dataset name (as written in configs and on the CLI)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import DatasetError
from .base import MultiLabelDataset
from .coco import COCODataset
from .digits import build_digits_dataset
from .folder import FolderDataset
from .voc import VOCDataset

DATASETS = ("voc2007", "voc2012", "coco2014", "folder", "digits")


def build_dataset(
    name: str, root: str | Path | None, split: str, transform: Callable | None = None,
) -> MultiLabelDataset:
    """Load split `split` of dataset `name` (one of DATASETS) from `root`.

    Splits: voc2007/voc2012 -> a file in ImageSets/Main ("trainval", "test", ...); coco2014 ->
    "train" | "val"; folder -> any <split>.csv in root; digits -> "train" | "test", with `root`
    the cache folder (None: the default cache; built on first use).
    """
    if name == "digits":
        return FolderDataset(build_digits_dataset(root), split, transform)
    if root is None:
        raise DatasetError(f"dataset {name!r} needs a root folder")
    if name in ("voc2007", "voc2012"):
        return VOCDataset(root, split, year=name[3:], transform=transform)
    if name == "coco2014":
        return COCODataset(root, split, transform)
    if name == "folder":
        return FolderDataset(root, split, transform)
    raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
