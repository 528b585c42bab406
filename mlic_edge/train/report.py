"""Metric tables for people: summary metrics and per-class AP, printed with rich."""
from __future__ import annotations

import math
from typing import Any, Sequence

SUMMARY_KEYS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def print_metrics(metrics: dict[str, Any], classes: Sequence[str], title: str = "") -> None:
    from ..core.console import make_console
    from rich.table import Table

    console = make_console()
    table = Table(title=title or None)
    for key in SUMMARY_KEYS:
        table.add_column(key, justify="right")
    table.add_row(*(_fmt(metrics.get(k)) for k in SUMMARY_KEYS))
    if "CF1_top3" in metrics:
        table.add_row(*(["top-3"] + [_fmt(metrics.get(f"{k}_top3")) for k in SUMMARY_KEYS[1:]]))
    at_class = metrics.get("per_class_thresholds")
    if at_class:   # the same predictions at the per-class thresholds (fitted on validation images)
        table.add_row(*(["per-class t"] + [_fmt(at_class.get(k)) for k in SUMMARY_KEYS[1:]]))
    console.print(table)
    ap = metrics.get("per_class_ap")
    if ap:
        per_class = Table(title="per-class AP (%)")
        per_class.add_column("class")
        per_class.add_column("AP", justify="right")
        for name, value in zip(classes, ap):
            per_class.add_row(str(name), _fmt(value))
        console.print(per_class)
