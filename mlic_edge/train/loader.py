"""Data loaders whose every random choice is a function of (seed, epoch, sample index).

That makes a run resumable at any optimizer step with identical results: the shuffle comes from
DistributedSampler(seed, epoch), each sample's augmentation from its own seed, and nothing depends
on how many workers there are or which worker drew which sample.
"""
from __future__ import annotations

import itertools
import random

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class IndexedSamples(Dataset):
    """Wraps a dataset so items carry their index and, when training, a per-sample RNG seed.

    Items are (index, (image, target)) or (index, None) when the image could not be read; the
    underlying dataset logs which file it was.
    """

    def __init__(self, dataset: Dataset, seed: int | None = None):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # workers are re-created every epoch, so they see this

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if self.seed is None:
            return index, self.dataset[index]
        sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(sample_seed)
                np.random.seed(sample_seed % 2**32)
                torch.manual_seed(sample_seed)
                return index, self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def collate_indexed(batch):
    """-> (indices (B,), images (B, 3, S, S), targets (B, K), n_skipped) without unreadable items."""
    good = [(i, item) for i, item in batch if item is not None]
    n_skipped = len(batch) - len(good)
    if not good:
        return torch.empty(0, dtype=torch.long), None, None, n_skipped
    indices = torch.tensor([i for i, _ in good], dtype=torch.long)
    images = torch.stack([torch.as_tensor(item[0]) for _, item in good])
    targets = torch.stack([torch.as_tensor(item[1], dtype=torch.float32) for _, item in good])
    return indices, images, targets, n_skipped


class ShardSampler(Sampler):
    """Evaluation: rank r takes samples r, r + W, r + 2W, ...; no padding, so no duplicates."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(Sampler):
    """DistributedSampler (shuffle by seed + epoch) that can start part-way into an epoch."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1):
        self.inner = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                        seed=seed, drop_last=False)
        self.skip = 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return len(self.inner) - self.skip
