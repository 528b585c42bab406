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


@table("serve_load")
def serve_load(result: dict, **options) -> str:
    """benchmarks/serve_load.py: one row per client count (latency percentiles of every request,
    the server's memory at the start, after warm-up, at the end and its peak)."""
    rows = [[s["clients"], num(s["seconds"], 0), s["requests"], num(s["throughput_rps"], 1), num(s["p50_ms"], 1),
             num(s["p90_ms"], 1), num(s["p99_ms"], 1), s["errors"], s["mismatches"], num(s["rss_start_mb"], 0),
             num(s["rss_warm_mb"], 0), num(s["rss_end_mb"], 0), num(s["rss_peak_mb"], 0)]
            for s in result["summary"]["runs"]]
    return markdown_table(["clients", "s", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors",
                           "label mismatches", "RSS start MB", "RSS warm MB", "RSS end MB", "RSS peak MB"], rows)
