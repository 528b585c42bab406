"""`LoadedModel`: what a model's metadata says about using it (classes, per-class thresholds,
preprocessing), read and checked once, and `Prediction`, what tagging one input gives.

The local `Tagger`, the `RemoteTagger` (a Triton server's model) and the server itself all label
scores through one LoadedModel, so a served model and a local one label the same scores alike.
Torch-free: numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.metadata import ModelMetadata
from ..core.preprocess import Preprocessing


@dataclass
class Prediction:
    """The tags of one input. `source`: the path or URL, or "<image N>" / "<array N>" for the N-th
    (0-based) in-memory input of a predict() call. Video frames also carry `frame` (number in the
    stream) and `time_s` (presentation time)."""
    source: str
    labels: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)    # every class, sigmoid scores
    error: str | None = None                                  # one line; then no labels/scores
    frame: int | None = None
    time_s: float | None = None
    attention: np.ndarray | None = None                       # (K, h, w) with with_attention=True
    image: Any = None                                         # the decoded PIL image with keep_images=True

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record `infer` writes (video frames add "frame" and "time_s")."""
        record: dict[str, Any] = {"path": self.source}
        if self.frame is not None:
            record.update(frame=self.frame, time_s=round(float(self.time_s or 0.0), 3))
        record.update(labels=self.labels, scores={c: round(s, 6) for c, s in self.scores.items()},
                      error=self.error)
        return record


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}")


@dataclass(frozen=True)
class LoadedModel:
    """A model's metadata with its classes, (K,) float64 thresholds and preprocessing checked.
    `source` names the file or URL in error messages. Build it with `from_metadata`."""

    metadata: ModelMetadata
    source: str
    classes: list[str]
    thresholds: np.ndarray
    preprocessing: Preprocessing

    @classmethod
    def from_metadata(cls, metadata: ModelMetadata, source: str) -> LoadedModel:
        """ModelFileError naming `source` for thresholds of the wrong count or a bad preprocess spec."""
        return cls(metadata, source, list(metadata.classes), metadata.class_thresholds(source),
                   metadata.preprocessing(source))

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    def limits(self, threshold: float | None = None) -> np.ndarray:
        """The (K,) thresholds: `threshold` for every class, else the model's per-class ones."""
        check_threshold(threshold)
        return self.thresholds if threshold is None else np.full(len(self.classes), float(threshold))

    def labels_above(self, scores: np.ndarray, limits: np.ndarray | None = None) -> list[str]:
        """The classes whose score (K,) is at or above its threshold (K,), in class order."""
        limits = self.thresholds if limits is None else limits
        return [self.classes[k] for k in np.flatnonzero(scores >= limits)]

    def scored(self, source: str, scores: np.ndarray, limits: np.ndarray | None = None) -> Prediction:
        """The Prediction of one input from its sigmoid scores (K,)."""
        return Prediction(source, labels=self.labels_above(scores, limits),
                          scores={c: float(s) for c, s in zip(self.classes, scores)})


__all__ = ["LoadedModel", "Prediction", "check_threshold"]
