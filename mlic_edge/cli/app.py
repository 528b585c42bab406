"""The `mlic-edge` Typer app itself, apart from the stages that register their verbs on it
(cli/__init__.py), so that a module can read the whole CLI without importing the stages."""
from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-label image classification (iRPE Transformer + APL) from training to the edge.",
    epilog="A problem with your input (an option, a --set value, a file) is one red line, exit code 2, "
           "nothing written; MLIC_EDGE_VERBOSE=1 shows its traceback too.",
)


@app.callback()
def _root() -> None:
    """Multi-label image classification (iRPE Transformer + APL) from training to the edge.

    Typical flow: quickstart | train -> eval -> export -> parity -> build-engine -> infer / bench.
    """
