"""`mlic-edge` command line: few verbs, sensible defaults, every option documented in --help.

Heavy imports (torch, timm, onnx) happen inside the commands, so `--help` is instant and the
runtime verbs work on machines without torch.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import List, Optional

import typer

from .app import app

# One module per stage; each registers its verbs. Nothing heavy is imported until a command runs.
from . import bench, build_engine, doctor, export, infer, parity, quickstart, serve, train  # noqa: E402

for _stage in (train, quickstart, export, parity, build_engine, infer, bench, doctor, serve):
    _stage.register(app)


VERBOSE_ENV = "MLIC_EDGE_VERBOSE"


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors become one red line, never a traceback (unless
    MLIC_EDGE_VERBOSE=1, for when the line is not enough to find the cause)."""
    from ..core.errors import MLICError
    try:
        app(args=argv, standalone_mode=True)
    except MLICError as e:
        if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
            traceback.print_exc()
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
