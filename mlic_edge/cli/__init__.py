"""`mlic-edge` command line: few verbs, sensible defaults, every option documented in --help.

Heavy imports (torch, timm, onnx) happen inside the commands, so `--help` is instant and the
runtime verbs work on machines without torch.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-label image classification (iRPE Transformer + APL) from training to the edge.",
)


@app.callback()
def _root() -> None:
    """Multi-label image classification (iRPE Transformer + APL) from training to the edge.

    Typical flow: quickstart | train -> eval -> export -> parity -> build-engine -> infer / bench.
    """


# One module per stage; each registers its verbs. Nothing heavy is imported until a command runs.
from . import engine, export, quickstart, runtime, train  # noqa: E402

for _stage in (train, quickstart, export, engine, runtime):
    _stage.register(app)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors become one red line, never a traceback."""
    from ..core.errors import MLICError
    try:
        app(args=argv, standalone_mode=True)
    except MLICError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
