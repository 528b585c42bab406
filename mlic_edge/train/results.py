"""What the training stage's library calls return (no torch: `api` and `evaluate` share them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Recipe


@dataclass
class TrainResult:
    """A finished run. `metrics`: the run's result (the test split once on best.pt's weights, or
    the validation figures they were selected on where there is no test split), as written to the
    last row of metrics.jsonl; `notes`: how the recipe was derived (empty when it was not)."""
    out_dir: Path
    recipe: Recipe
    metrics: dict[str, Any]
    notes: str = ""

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def selected_epoch(self) -> int | None:
        """The epoch whose weights are best.pt's."""
        return self.metrics.get("epoch")

    @property
    def selected_weights(self) -> str | None:
        """"model" or "ema": which of the epoch's weights best.pt holds."""
        return self.metrics.get("weights")

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped: patience | time budget | epochs (None where the checkpoint it was
        read from records no reason)."""
        return self.metrics.get("stopped")

    @property
    def stop_detail(self) -> str | None:
        return self.metrics.get("stop_detail")


@dataclass
class EvalResult:
    """A checkpoint scored on a split: `metrics` (mAP, CP, CR, CF1, OP, OR, OF1, per_class_ap, ...,
    in percent; empty for a split without public labels) and the files written."""
    checkpoint: Path
    dataset: str
    split: str
    metrics: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    json_path: Path | None = None
    plot_path: Path | None = None
