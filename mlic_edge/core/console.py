"""The one way mlic-edge makes a rich console.

On a terminal, rich wraps text at the terminal's width. Anywhere else (a pipe, a log file, CI)
a line is printed whole: logs are grepped, and a message broken at column 80 no longer matches.
"""
from __future__ import annotations

import logging

# Wide enough that no table or message is cut (a Rule() would span it: give it its own width).
UNWRAPPED_WIDTH = 400


def make_console(*, stderr: bool = False, width: int | None = None):
    """A rich Console on stdout (or stderr) that never wraps a line when not on a terminal.
    `width` fixes the width on a terminal too (a wide table)."""
    from rich.console import Console

    console = Console(stderr=stderr, width=width)
    if not console.is_terminal:
        console.soft_wrap = True
        console.width = max(width or 0, UNWRAPPED_WIDTH)
    return console


_verbose = False
_handler: logging.Handler | None = None


def setup_logging(verbose: bool | None = None) -> None:
    """mlic-edge's own INFO messages on the console; the libraries underneath (ONNX exporter and
    optimizers, timm, ...) only from WARNING, unless `verbose` (the CLI's --verbose). None keeps
    the last choice, so library calls inside a verbose command stay verbose. Only the handler
    this function added before is replaced: handlers others put on the root logger stay."""
    from rich.logging import RichHandler

    global _verbose, _handler
    _verbose = _verbose if verbose is None else verbose
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = RichHandler(console=make_console(), show_path=False, rich_tracebacks=False)
    _handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    root.addHandler(_handler)
    root.setLevel(logging.INFO if _verbose else logging.WARNING)
    logging.getLogger("mlic_edge").setLevel(logging.INFO)
