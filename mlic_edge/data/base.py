"""What every dataset provides, and the collate function that tolerates broken images.

Targets are float32 (K,) vectors: 1 = positive, 0 = negative, -1 = difficult (ignored by AP, see
docs/method.md "Metrics"). A missing or corrupt image file does not stop a multi-hour training
run: `__getitem__` returns None (with one warning per file and process: DataLoader workers each
keep their own record) and `collate_skip_broken` drops it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor

from ..core.errors import DatasetError
from ..core.preprocess import load_image

log = logging.getLogger(__name__)

Sample = tuple[Path, np.ndarray]


class MultiLabelDataset(Dataset):
    """Images with multi-hot targets.

    Attributes: `classes` (K names), `samples` [(image path, float32 (K,) target)], `ids` (one
    string per sample: the source's image id, e.g. VOC's "2008_000001", for result files),
    `targets` (N, K), `has_labels` (False for splits whose labels are not public).
    Without a transform, images come out as float tensors in [0, 1] at their own size.
    """

    def __init__(
        self,
        classes: Sequence[str],
        samples: Sequence[Sample],
        ids: Sequence[str],
        transform: Callable | None = None,
        *,
        source: str,
        has_labels: bool = True,
    ):
        if not samples:
            raise DatasetError(f"{source}: the split lists no images")
        self.classes = list(classes)
        self.samples = list(samples)
        self.ids = list(ids)
        self.transform = transform
        self.has_labels = has_labels
        self.source = source
        self._warned: set[Path] = set()

    @property
    def targets(self) -> np.ndarray:
        return np.stack([target for _, target in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        path, target = self.samples[index]
        try:
            # The eval transform squash-resizes to its size: decode JPEGs reduced, as the runtime does.
            image = load_image(path, reduce_to=getattr(self.transform, "image_size", None))
        except DatasetError as e:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("%s; skipping it", e)
            return None
        tensor = self.transform(image) if self.transform is not None else to_tensor(image)
        return tensor, torch.from_numpy(target)

    def split_off(self, share: float, seed: int) -> "MultiLabelDataset":
        """Move a seeded random `share` of the samples into a new dataset (returned) and keep the
        rest: the same draw on every rank and on resume."""
        import copy

        order = np.random.default_rng(seed).permutation(len(self.samples))
        taken = set(order[:max(1, round(share * len(self.samples)))].tolist())
        other = copy.copy(self)
        other.samples = [s for i, s in enumerate(self.samples) if i in taken]
        other.ids = [s for i, s in enumerate(self.ids) if i in taken]
        other.source = f"{self.source} (held out: {len(taken)} images)"
        other._warned = set()
        self.samples = [s for i, s in enumerate(self.samples) if i not in taken]
        self.ids = [s for i, s in enumerate(self.ids) if i not in taken]
        return other

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, {len(self)} images, {len(self.classes)} classes)"


def collate_skip_broken(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor] | None],
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """DataLoader collate_fn: stack the readable samples, drop the Nones.

    Returns (images (B', 3, S, S), targets (B', K), number dropped). When every sample is broken,
    images is an empty (0, 3, 0, 0) tensor and targets (0, 0): callers skip such a batch.
    """
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0, 3, 0, 0), torch.empty(0, 0), skipped
    images, targets = zip(*kept)
    return torch.stack(images), torch.stack(targets), skipped
