"""Training and evaluation: trainer (AdamW + one-cycle, AMP, EMA, DDP, exact resume) and eval."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import Recipe

_verbose = False


def setup_logging(verbose: bool | None = None) -> None:
    """mlic-edge's own INFO messages on the console; the libraries underneath (ONNX exporter and
    optimizers, timm, ...) only from WARNING, unless `verbose` (the CLI's --verbose). None keeps
    the last choice, so library calls inside a verbose command stay verbose."""
    from rich.logging import RichHandler

    global _verbose
    _verbose = _verbose if verbose is None else verbose
    logging.basicConfig(level=logging.INFO if _verbose else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)
    logging.getLogger("mlic_edge").setLevel(logging.INFO)


def run_training(recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, notes: str = "") -> int:
    """Train; returns the process exit code (0 done, 130 interrupted and saved). notes: comment
    lines at the top of the run's recipe.yaml (how the recipe was derived)."""
    from .trainer import Interrupted, Trainer

    setup_logging()
    trainer = Trainer(recipe, out_dir, resume=resume, show_progress=show_progress, notes=notes)
    try:
        best = trainer.fit()
    except Interrupted as e:
        logging.getLogger("mlic_edge").warning(str(e))
        return 130
    if trainer.dist.is_main:
        from .report import print_metrics
        print_metrics(best, trainer.classes, title=f"best weights ({best.get('weights')}, epoch "
                                                   f"{best.get('epoch')}) -> {Path(out_dir) / 'best.pt'}")
    return 0
