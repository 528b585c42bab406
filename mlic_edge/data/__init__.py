"""Datasets (VOC 2007/2012, COCO 2014, CSV folders, the built-in digits demo) and transforms.

Every dataset yields (image tensor, target tensor) with targets 1 / 0 / -1 (difficult), or None
for an unreadable image; use `collate_skip_broken` as the DataLoader's collate_fn.
"""
from .base import MultiLabelDataset, collate_skip_broken
from .datasets import DATASETS, build_dataset
from .digits import build_digits_dataset
from .transforms import build_transform

__all__ = ["DATASETS", "MultiLabelDataset", "build_dataset", "build_digits_dataset", "build_transform",
           "collate_skip_broken"]
