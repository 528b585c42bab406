"""PASCAL VOC 2007 / 2012 classification, read from the devkit layout:
VOCdevkit/VOC20xx/{Annotations/<id>.xml, ImageSets/Main/<split>.txt, JPEGImages/<id>.jpg}.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from .base import MultiLabelDataset

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


class VOCDataset(MultiLabelDataset):
    """One split of VOC `year` ("2007" or "2012"). `root` may be the VOCdevkit folder, the
    VOC20xx folder itself, or a folder holding VOCdevkit.

    A class is difficult (-1) for an image when every object of that class in it is marked
    difficult; one non-difficult object makes it positive. VOC 2012 test labels are not public:
    that split loads with all-zero targets and `has_labels = False` (predict, then submit).
    """

    def __init__(self, root: str | Path, split: str, year: str, transform: Callable | None = None):
        voc_dir = find_voc_dir(Path(root), year)
        split_file = voc_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
            raise DatasetError(f"{split_file}: split file not found (splits here: {', '.join(available) or 'none'})")
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        has_labels = not (year == "2012" and split == "test")
        samples = []
        for image_id in ids:
            if has_labels:
                target = parse_voc_annotation(voc_dir / "Annotations" / f"{image_id}.xml")
            else:
                target = np.zeros(len(VOC_CLASSES), dtype=np.float32)
            samples.append((voc_dir / "JPEGImages" / f"{image_id}.jpg", target))
        super().__init__(VOC_CLASSES, samples, ids, transform, source=str(split_file), has_labels=has_labels)


def find_voc_dir(root: Path, year: str) -> Path:
    """The VOC<year> folder, whichever of its ancestors (or itself) `root` names."""
    for candidate in (root, root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}"):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise DatasetError(f"{root}: no VOC{year} devkit here (expected VOC{year}/ImageSets/Main, "
                       f"VOC{year}/Annotations and VOC{year}/JPEGImages)")


def parse_voc_annotation(xml_path: Path) -> np.ndarray:
    """Multi-label target (20,) from one annotation file, with the difficult rule above."""
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: annotation file not found") from None
    except ET.ParseError as e:
        raise DatasetError(f"{xml_path}: malformed XML ({e})") from None
    target = np.zeros(len(VOC_CLASSES), dtype=np.float32)
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(f"{xml_path}: unknown VOC class {name!r}")
        k = VOC_CLASSES.index(name)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if not difficult:
            target[k] = 1.0
        elif target[k] == 0.0:
            target[k] = -1.0
    return target
