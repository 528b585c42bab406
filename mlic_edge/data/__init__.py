"""Datasets (VOC 2007/2012, COCO 2014, CSV folders, the built-in digits demo) and transforms.

Every dataset yields (image tensor, target tensor) with targets 1 / 0 / -1 (difficult), or None
for an unreadable image; use `collate_skip_broken` as the DataLoader's collate_fn.

The names are loaded on first use (PEP 562), so `mlic_edge.data.registry` (names and splits of
the datasets, torch-free) imports without torch.
"""
from importlib import import_module

_EXPORTS = {"MultiLabelDataset": "base", "collate_skip_broken": "base", "DATASETS": "registry",
            "build_dataset": "datasets", "build_digits_dataset": "digits", "build_transform": "transforms",
            "dataset_batches": "datasets"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
