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


def setup_logging(verbose: bool | None = None) -> None:
    """mlic-edge's own INFO messages on the console; the libraries underneath (ONNX exporter and
    optimizers, timm, ...) only from WARNING, unless `verbose` (the CLI's --verbose). None keeps
    the last choice, so library calls inside a verbose command stay verbose."""
    from rich.logging import RichHandler

    global _verbose
    _verbose = _verbose if verbose is None else verbose
    handler = RichHandler(console=make_console(), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.INFO if _verbose else logging.WARNING, format="%(message)s", datefmt="[%X]",
                        handlers=[handler], force=True)
    logging.getLogger("mlic_edge").setLevel(logging.INFO)
