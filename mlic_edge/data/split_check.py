"""Sanity checks of a train/test split, run before training: warnings, never errors.

* the same image in both splits (same file content: SHA-256 of the bytes; only files whose sizes
  occur in both splits are hashed, so a COCO-sized set costs seconds, not a full read);
* a class with no positive image in a split (its AP is undefined there, or it cannot be learnt).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..core.files import file_sha256

EXAMPLES = 3


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None                     # unreadable: the loader reports it


def shared_images(train_paths: list[Path], test_paths: list[Path]) -> list[tuple[Path, Path]]:
    """(train file, test file) pairs with identical content."""
    def sizes(paths):
        by_size = defaultdict(list)
        for path in paths:
            try:
                by_size[path.stat().st_size].append(path)
            except OSError:
                continue
        return by_size

    train_sizes, test_sizes = sizes(train_paths), sizes(test_paths)
    pairs = []
    for size in sorted(set(train_sizes) & set(test_sizes)):
        train_hashes = {}
        for path in train_sizes[size]:
            train_hashes.setdefault(_sha256(path), path)
        train_hashes.pop(None, None)
        pairs += [(train_hashes[h], path) for path in test_sizes[size] if (h := _sha256(path)) in train_hashes]
    return pairs


def classes_without_positives(targets: np.ndarray, classes: list[str]) -> list[str]:
    return [name for name, count in zip(classes, (targets == 1).sum(axis=0)) if count == 0]


def split_warnings(train_set, test_set, name: str = "test", training: bool = True) -> list[str]:
    """One-line warnings about the pair of splits (empty when all is well). `name`: what the
    second split is (test, validation); `training`: also check the training split's classes."""
    warnings = []
    pairs = shared_images([p for p, _ in train_set.samples], [p for p, _ in test_set.samples])
    if pairs:
        shown = ", ".join(f"{a.name} = {b.name}" for a, b in pairs[:EXAMPLES])
        warnings.append(f"{len(pairs)} {name} image(s) also in the training split (same content), e.g. {shown}: "
                        f"the {name} mAP will be optimistic")
    for name, split in ((("training", train_set),) if training else ()) + ((name, test_set),):
        if not getattr(split, "has_labels", True):
            continue
        missing = classes_without_positives(split.targets, list(split.classes))
        if missing:
            shown = ", ".join(missing[:EXAMPLES]) + (", ..." if len(missing) > EXAMPLES else "")
            warnings.append(f"{len(missing)} class(es) with no positive image in the {name} split "
                            f"({split.source}): {shown}")
    return warnings
