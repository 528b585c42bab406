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


def result_title(result: dict[str, Any], best_pt) -> str:
    """What the final table's figures are: the test split once on the selected weights, a selected
    test figure (the paper's protocol), or validation figures (no test split)."""
    chosen = f"{result.get('weights')} weights of epoch {result.get('epoch')} -> {best_pt}"
    if result.get("split") != "test":
        return f"no test split: validation figures of the selected weights ({chosen})"
    if result.get("note"):
        return f"test split, SELECTED on it (train.select_on test; optimistic): {chosen}"
    return f"test split, evaluated once on the weights selected on the {result.get('selected_on')}: {chosen}"
