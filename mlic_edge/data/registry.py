"""The datasets mlic-edge knows, declared once: names, splits, defaults (no torch: the CLI's help
and the recipes read it). Loaders live beside it (`datasets.build_dataset`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    splits: tuple[str, ...]     # the splits it has; () = any split its files name (VOC, folder)
    train_split: str            # the usual (train, test) pair
    test_split: str
    needs_root: bool
    about: str


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("voc2007", (), "trainval", "test", True,
                "PASCAL VOC 2007 (--data-root: VOCdevkit; splits: ImageSets/Main/<split>.txt)"),
    # VOC 2012's test labels are private: evaluate on val, submit test predictions to the server.
    DatasetSpec("voc2012", (), "train", "val", True,
                "PASCAL VOC 2012 (--data-root: VOCdevkit; splits: ImageSets/Main/<split>.txt)"),
    DatasetSpec("coco2014", ("train", "val"), "train", "val", True, "MS-COCO 2014 (--data-root: the COCO root)"),
    DatasetSpec("folder", (), "train", "test", True, "your own: <root>/<split>.csv (image,labels) [+ classes.txt]"),
    DatasetSpec("digits", ("train", "test"), "train", "test", False, "built-in demo set (MNIST digits on a canvas)"),
)}
NAMES = tuple(DATASETS)


def dataset_help(prefix: str = "Dataset") -> str:
    """CLI help naming every dataset: 'Dataset: voc2007 | voc2012 | ...'."""
    return f"{prefix}: {' | '.join(NAMES)}."


def default_splits(name: str) -> tuple[str, str]:
    """(train, test) split names of a dataset; ("train", "test") for names it does not know."""
    spec = DATASETS.get(name)
    return (spec.train_split, spec.test_split) if spec else ("train", "test")
