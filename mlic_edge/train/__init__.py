"""Training and evaluation: trainer (AdamW + one-cycle, AMP, EMA, DDP, exact resume) and eval."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import Recipe
from ..core.console import setup_logging

def run_training(recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, notes: str = "") -> int:
    """Train; returns the process exit code (0 done, 130 interrupted and saved). notes: comment
    lines at the top of the run's recipe.yaml (how the recipe was derived)."""
    from .trainer import Interrupted, Trainer

    setup_logging()
    trainer = Trainer(recipe, out_dir, resume=resume, show_progress=show_progress, notes=notes)
    try:
        result = trainer.fit()
    except Interrupted as e:
        logging.getLogger("mlic_edge").warning(str(e))
        return 130
    if trainer.dist.is_main:
        from .report import print_metrics
        print_metrics(result, trainer.classes, title=result_title(result, Path(out_dir) / "best.pt"))
    return 0


def result_title(result: dict, best_pt: Path) -> str:
    """What the final table's figures are: the test split once on the selected weights, a selected
    test figure (the paper's protocol), or validation figures (no test split)."""
    chosen = f"{result.get('weights')} weights of epoch {result.get('epoch')} -> {best_pt}"
    if result.get("split") != "test":
        return f"no test split: validation figures of the selected weights ({chosen})"
    if result.get("note"):
        return f"test split, SELECTED on it (train.select_on test; optimistic): {chosen}"
    return f"test split, evaluated once on the weights selected on the {result.get('selected_on')}: {chosen}"
