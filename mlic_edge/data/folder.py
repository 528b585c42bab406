"""A user's own data: CSV files in one folder.

    root/
      classes.txt      optional; one class per line, order kept (= output order of the model)
      train.csv        header "image,labels"; image path relative to root; labels joined by ";"
      test.csv         (labels may be empty: an image with no class)
      val.csv          optional

Without classes.txt the classes are the sorted union of the labels of the split files (train.csv,
val.csv, test.csv, and the split read when it has another name), so train and test agree on the
class order even when a class appears in only one of them. Other CSV files in root (a saved
preds.csv, say) are not read. Splits with other names should come with a classes.txt.
"""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from .base import MultiLabelDataset

HEADER = ["image", "labels"]
CLASSES_FILE = "classes.txt"
SPLIT_FILES = ("train", "val", "test")   # the splits whose labels make up the class list


class FolderDataset(MultiLabelDataset):
    """One split (`<split>.csv`) of a CSV folder dataset; see the module docstring for the layout."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        csv_path = root / f"{split}.csv"
        if not csv_path.is_file():
            found = sorted(p.name for p in root.glob("*.csv"))
            raise DatasetError(f"{csv_path}: split file not found (found: {', '.join(found) or 'no csv files'})")
        classes = read_classes(root, split)
        index_of = {name: k for k, name in enumerate(classes)}
        samples, ids = [], []
        for line_no, image, labels in read_split_csv(csv_path):
            target = np.zeros(len(classes), dtype=np.float32)
            for label in labels:
                if label not in index_of:
                    raise DatasetError(f"{csv_path}:{line_no}: label {label!r} is not in {CLASSES_FILE}")
                target[index_of[label]] = 1.0
            samples.append((root / image, target))
            ids.append(image)
        super().__init__(classes, samples, ids, transform, source=str(csv_path))


def read_classes(root: Path, split: str | None = None) -> list[str]:
    """classes.txt when present, else the sorted union of the labels of the split files
    (SPLIT_FILES and `split`); any other CSV in root is not a split and is not read."""
    classes_path = root / CLASSES_FILE
    if classes_path.is_file():
        return _read_classes_file(classes_path)
    names = dict.fromkeys((*SPLIT_FILES, *([split] if split else [])))
    split_files = [root / f"{name}.csv" for name in names if (root / f"{name}.csv").is_file()]
    labels = {label for csv_path in split_files for _, _, row in read_split_csv(csv_path) for label in row}
    if not labels:
        raise DatasetError(f"{root}: no labels in the split files ({', '.join(f'{n}.csv' for n in names)}) "
                           f"and no {CLASSES_FILE}")
    return sorted(labels)


def _read_classes_file(classes_path: Path) -> list[str]:
    """One class per line, order kept; a one-line DatasetError for an encoding other than UTF-8."""
    try:
        text = classes_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{classes_path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                           f"save it as UTF-8") from None
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise DatasetError(f"{classes_path}: duplicate classes: {', '.join(duplicates)}")
    if not classes:
        raise DatasetError(f"{classes_path}: no classes listed")
    return classes


def read_split_csv(csv_path: Path) -> list[tuple[int, str, list[str]]]:
    """Rows of a split csv as (line number, image path, labels); DatasetError on any malformed row."""
    try:
        return _parse_split_csv(csv_path)
    except (csv.Error, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv_path}: not a readable UTF-8 csv file ({e})") from None


def _parse_split_csv(csv_path: Path) -> list[tuple[int, str, list[str]]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [cell.strip() for cell in next(reader, [])]
        if header != HEADER:
            raise DatasetError(f"{csv_path}:1: header must be 'image,labels', got {','.join(header)!r}")
        rows = []
        for row in reader:
            line_no = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2 or not row[0].strip():
                raise DatasetError(f"{csv_path}:{line_no}: expected 'image,labels', got {','.join(row)!r}")
            labels = [label.strip() for label in row[1].split(";") if label.strip()]
            rows.append((line_no, row[0].strip(), labels))
    return rows
