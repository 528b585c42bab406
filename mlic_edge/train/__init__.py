"""Training and evaluation: trainer (AdamW + one-cycle, AMP, EMA, DDP, exact resume) and eval.
The library's entry points are in `api` (train, evaluate; cheap to import). Calling this package,
`mlic_edge.train(...)`, runs `api.train(...)`; `evaluate` is not re-exported here, since it is
also this package's submodule, whose import would replace it."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import Recipe
from ..core.callable_module import make_callable
from .api import TrainingInterrupted, train_recipe

make_callable(__name__, "mlic_edge.train.api:train")


def run_training(recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, notes: str = "") -> int:
    """`train_recipe` as a process exit code (0 done, 130 interrupted and saved), for the callers
    that want one (the quickstart, benchmarks)."""
    from ..core.console import setup_logging

    setup_logging()
    try:
        train_recipe(recipe, out_dir, resume=resume, show_progress=show_progress, notes=notes)
    except TrainingInterrupted as e:
        logging.getLogger("mlic_edge").warning(str(e))
        return 130
    return 0
