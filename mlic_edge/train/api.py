"""The training stage as a library: `train(...) -> TrainResult`, `evaluate(...) -> EvalResult`.

They take the CLI's options as keyword arguments, return result objects and raise `MLICError`
subclasses (a one-line message); Ctrl-C during training raises `TrainingInterrupted`, which
carries where the run stopped and the checkpoint to resume from. Importing this module is cheap
(no torch until a function runs).

    train(config=None, *, data=None, data_root=None, preset=None, out="runs/train", resume=False,
          workers=None, set_items=(), show_progress=True,
          backbone=, pretrained=, image_size=, encoder=, decoder_self_attn=, epochs=, time_budget=,
          batch_size=, lr=, loss=, device=, amp=, compile=, seed=) -> TrainResult
    evaluate(checkpoint, *, data, data_root=None, split=None, batch_size=32, device="auto",
             workers=2, threshold=0.5, ap_mode="noninterp", json_out=None, plot=None,
             voc12_submission=None) -> EvalResult
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..core.errors import TrainingError, TrainingInterrupted
from .results import EvalResult, TrainResult

__all__ = ["train", "train_recipe", "evaluate", "TrainResult", "EvalResult", "TrainingError", "TrainingInterrupted"]


def train(config: str | Path | None = None, *, data: str | None = None, data_root: str | Path | None = None,
          preset: str | None = None, out: str | Path = "runs/train", resume: bool = False,
          workers: int | None = None, set_items: Iterable[str] = (), show_progress: bool = True,
          **options: Any) -> TrainResult:
    """Train a model: the recipe from `train.recipes.resolve_recipe` (a file or shipped recipe
    name, a preset and the data, the keyword options), then the run in `out` (recipe.yaml, last.pt,
    best.pt, metrics.jsonl, curves.png). A derived recipe is printed first; the final metrics last."""
    from .recipes import resolve_recipe

    if options.get("device") is not None:   # before any data is read: a GPU that is not there fails now
        from .distributed import check_device_available
        check_device_available(options["device"], "--device")
    resolved = resolve_recipe(config, data=data, data_root=data_root, preset=preset, workers=workers,
                              set_items=set_items, resume=resume, **options)
    if resolved.notes:
        print(resolved.notes)
    return train_recipe(resolved.recipe, out, resume=resume, show_progress=show_progress, notes=resolved.notes)


def train_recipe(recipe: Recipe, out: str | Path, *, resume: bool = False, show_progress: bool = True,
                 notes: str = "") -> TrainResult:
    """Train `recipe` into `out` (resume: continue the run there from its last.pt) and print the
    final metrics. `notes`: comment lines at the top of the run's recipe.yaml."""
    from .report import print_metrics, result_title
    from .trainer import Trainer

    trainer = Trainer(recipe, out, resume=resume, show_progress=show_progress, notes=notes)
    metrics = trainer.fit()
    if trainer.dist.is_main:
        print_metrics(metrics, trainer.classes, title=result_title(metrics, Path(out) / "best.pt"))
    return TrainResult(Path(out), trainer.recipe, metrics, notes)


def evaluate(checkpoint: str | Path, *, data: str, data_root: str | Path | None = None, split: str | None = None,
             batch_size: int = 32, device: str = "auto", workers: int = 2, threshold: float = 0.5,
             ap_mode: str = "noninterp", json_out: str | Path | None = None, plot: str | Path | None = None,
             voc12_submission: str | Path | None = None) -> EvalResult:
    """Score a checkpoint (best.pt / last.pt) on a dataset split (default: its test split), print
    the metrics and write the per-class AP plot (default: next to `json_out`, else beside the
    checkpoint), the JSON (`json_out`) and VOC2012 server files (`voc12_submission`) when asked."""
    from .evaluate import evaluate_checkpoint

    return evaluate_checkpoint(Path(checkpoint), data, data_root, split, batch_size=batch_size, device=device,
                               workers=workers, threshold=threshold, ap_mode=ap_mode,
                               json_out=None if json_out is None else Path(json_out),
                               plot=None if plot is None else Path(plot),
                               voc12_submission=None if voc12_submission is None else Path(voc12_submission))
