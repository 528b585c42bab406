"""`build_dataset`: one entry point from a dataset name (as written in configs and on the CLI)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.errors import DatasetError
from .base import MultiLabelDataset
from .coco import COCODataset
from .digits import build_digits_dataset
from .folder import FolderDataset
from .registry import DATASETS
from .voc import VOCDataset


def build_dataset(
    name: str, root: str | Path | None, split: str, transform: Callable | None = None,
) -> MultiLabelDataset:
    """Load split `split` of dataset `name` (one of DATASETS) from `root`.

    Splits: voc2007/voc2012 -> a file in ImageSets/Main ("trainval", "test", ...); coco2014 ->
    "train" | "val"; folder -> any <split>.csv in root; digits -> "train" | "test", with `root`
    the cache folder (None: the default cache; built on first use).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    spec = DATASETS[name]
    if spec.splits and split not in spec.splits:
        raise DatasetError(f"{name}: unknown split {split!r} (use one of {', '.join(spec.splits)})")
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


VALIDATION_SPLIT = "val"   # a folder's val.csv: the split training selects on (never the test split)


def optional_split(name: str, root: str | Path | None, split: str) -> bool:
    """Whether `split` of a folder dataset is there (its <split>.csv). Only a folder's splits are
    optional: train without test.csv (no test figure), select on val.csv when it exists. Other
    datasets have fixed splits; their validation split is a hold-out of the training images."""
    return name == "folder" and root is not None and (Path(root) / f"{split}.csv").is_file()


def validation_split(name: str, root: str | Path | None, train_split: str, test_split: str) -> str | None:
    """The dataset's own validation split when it has one apart from train and test (a folder's
    val.csv), else None (training then holds out some of its training images)."""
    if VALIDATION_SPLIT in (train_split, test_split):
        return None
    return VALIDATION_SPLIT if optional_split(name, root, VALIDATION_SPLIT) else None


def has_test_split(name: str, root: str | Path | None, test_split: str) -> bool:
    """A folder without <test_split>.csv still trains (it has no test figure); others always have one."""
    return name != "folder" or optional_split(name, root, test_split)


def dataset_batches(dataset, batch_size: int, *, indices=None, workers: int = 0):
    """(images (B, 3, S, S) float32, targets (B, K)) numpy batches of a dataset (or of `indices`
    of it), unreadable images skipped: the one "dataset as arrays" reader (parity, calibration)."""
    import torch

    from .base import collate_skip_broken

    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_skip_broken)
    for images, targets, _ in loader:
        if len(images):
            yield images.numpy(), targets.numpy()
