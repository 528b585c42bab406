"""One look for long-running work (infer, training epochs): a rich progress bar with the
description, the bar, done/total, a free text field (`info`: rate, loss, ...) and the times."""
from __future__ import annotations


def progress_bar(console=None, *, disable: bool = False, transient: bool = False):
    """A rich Progress; tasks are added with `add_task(description, total=..., info="")`."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from .console import make_console

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console or make_console(), disable=disable, transient=transient)
