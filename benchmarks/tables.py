"""The renderers that turn result files into the markdown tables of the docs.

Each renderer is registered by name with `@table("name")`, takes a result file's dict (see
result_files.py) and the block's options, and returns the markdown table. `report.py` adds the
line naming the result file, machine, command and commit, and checks that the docs hold exactly
what the renderers make. Standard library only.
"""
from __future__ import annotations

import statistics
from typing import Callable

Renderer = Callable[..., str]
TABLES: dict[str, Renderer] = {}


def table(name: str) -> Callable[[Renderer], Renderer]:
    def register(render: Renderer) -> Renderer:
        if name in TABLES:
            raise ValueError(f"table {name!r} is registered twice")
        TABLES[name] = render
        return render
    return register


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value, digits: int = 2) -> str:
    """A figure as published: fixed decimals, '-' when missing."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def mean_sd(values: list[float], digits: int = 2) -> str:
    """'mean +- sd' over runs (sample sd; 0 for one run)."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {sd:.{digits}f}"


SET_NAMES = {"digits": "digits (MNIST mosaics)", "photos": "photo-scenes", "mosaics": "region-mosaics"}


def _sets(result: dict) -> list[str]:
    return list(dict.fromkeys(run["set"] for run in result["runs"]))


@table("own-data-sets")
def own_data_sets(result: dict, **options) -> str:
    """Per data set: runs, data seeds, test mAP and CF1 (mean +- sd over runs), epochs, wall time."""
    rows = []
    for name in _sets(result):
        runs = [run for run in result["runs"] if run["set"] == name]
        data_seeds = ", ".join(str(seed) for seed in dict.fromkeys(run.get("data_seed") for run in runs))
        rows.append([SET_NAMES.get(name, name), len(runs), data_seeds,
                     mean_sd([run["test_mAP"] for run in runs]), mean_sd([run["test_CF1"] for run in runs]),
                     mean_sd([run["epochs_run"] for run in runs], 1),
                     mean_sd([run["wall_s"] for run in runs if run.get("wall_s") is not None], 0)])
    return markdown_table(["data set", "runs", "data seeds", "test mAP", "CF1 @0.5", "epochs", "wall time (s)"], rows)


@table("own-data-runs")
def own_data_runs(result: dict, **options) -> str:
    """One row per run: seeds, epochs (best one tested), why it stopped, hold-out and test figures,
    wall time and the load average (1 min) before and after it."""
    def load(value):
        return "-" if not value else num(value[0], 1)

    rows = [[SET_NAMES.get(run["set"], run["set"]), run.get("data_seed", "-"), run["seed"], run["epochs_run"],
             f"{run['best_epoch']} ({run['best_weights']})", run["stopped"] or "-",
             num(run["selection_mAP"]), num(run["test_mAP"]), num(run["test_CF1"]), num(run["test_CF1_per_class"]),
             num(run.get("wall_s"), 0), f"{load(run.get('load_before'))} / {load(run.get('load_after'))}"]
            for run in result["runs"]]
    return markdown_table(["data set", "data seed", "seed", "epochs", "best epoch", "stopped", "hold-out mAP",
                           "test mAP", "CF1 @0.5", "CF1 @per-class", "wall time (s)", "load before / after"], rows)
