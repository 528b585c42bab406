"""The training stage's errors (no torch: `mlic_edge.train.api` raises them without importing it)."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import MLICError


class TrainingError(MLICError):
    """A run that cannot go on: a non-finite loss, splits that disagree, no memory for one image."""


class TrainingInterrupted(MLICError):
    """Ctrl-C during training. `last_checkpoint` holds the state to resume from (None when the run
    was aborted before its first save); `epoch` and `step` say where it stopped; `train(...,
    resume=True)` on `out_dir` continues exactly there."""

    def __init__(self, message: str, out_dir: Path, epoch: int, step: int):
        super().__init__(message)
        self.out_dir = Path(out_dir)
        self.epoch, self.step = epoch, step

    @property
    def last_checkpoint(self) -> Path | None:
        path = self.out_dir / "last.pt"
        return path if path.is_file() else None
