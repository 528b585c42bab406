"""Training and evaluation: trainer (AdamW + one-cycle, AMP, EMA, DDP, exact resume) and eval."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import Recipe


def setup_logging() -> None:
    from rich.logging import RichHandler
    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)


def run_training(recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True) -> int:
    """Train; returns the process exit code (0 done, 130 interrupted and saved)."""
    from .trainer import Interrupted, Trainer

    setup_logging()
    trainer = Trainer(recipe, out_dir, resume=resume, show_progress=show_progress)
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
