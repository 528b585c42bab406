"""MS-COCO 2014 as a multi-label set: root/{train2014,val2014}/ + root/annotations/instances_<split>2014.json."""
from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from .base import MultiLabelDataset

log = logging.getLogger(__name__)

COCO_SPLITS = ("train", "val")


class COCODataset(MultiLabelDataset):
    """Labels = the categories of an image's instance annotations (crowd ones included, as in ASL).

    The 80 category ids (1..90, with gaps) map to 0..79 in id order; `category_ids[k]` gives the
    id back. Images without any annotation are left out, as the reference loaders do; their
    number is in `n_without_labels`.
    """

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None):
        if split not in COCO_SPLITS:
            raise DatasetError(f"coco2014: unknown split {split!r} (use one of {', '.join(COCO_SPLITS)})")
        root = Path(root)
        ann_file = root / "annotations" / f"instances_{split}2014.json"
        image_dir = root / f"{split}2014"
        if not ann_file.is_file():
            raise DatasetError(f"{ann_file}: annotation file not found")
        coco = _load_coco(ann_file)
        self.category_ids = sorted(coco.cats)
        index_of = {cat_id: k for k, cat_id in enumerate(self.category_ids)}
        classes = [coco.cats[cat_id]["name"] for cat_id in self.category_ids]
        samples, ids = [], []
        for image_id in sorted(coco.imgs):
            anns = coco.imgToAnns.get(image_id, [])
            if not anns:
                continue
            target = np.zeros(len(classes), dtype=np.float32)
            for ann in anns:
                if ann["category_id"] not in index_of:
                    raise DatasetError(f"{ann_file}: annotation {ann.get('id')} has unknown category_id {ann['category_id']}")
                target[index_of[ann["category_id"]]] = 1.0
            samples.append((image_dir / coco.imgs[image_id]["file_name"], target))
            ids.append(str(image_id))
        self.n_without_labels = len(coco.imgs) - len(samples)
        if self.n_without_labels:
            log.info("%s: left out %d images without annotations", ann_file, self.n_without_labels)
        super().__init__(classes, samples, ids, transform, source=str(ann_file))


def _load_coco(ann_file: Path):
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DatasetError("coco2014 needs pycocotools: pip install 'mlic-edge[coco]'") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            return COCO(str(ann_file))
    except (ValueError, KeyError, TypeError, AssertionError) as e:  # bad JSON / missing sections
        raise DatasetError(f"{ann_file}: malformed COCO annotation file ({type(e).__name__}: {e})") from None
