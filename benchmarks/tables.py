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


@table("serve_throughput")
def render_serve_throughput(result: dict, **_options) -> str:
    """benchmarks/serve_throughput.py: per model and transport, local `infer` (as shipped, and with
    the server's ONNX Runtime setting: no spinning) and served images/s (medians of the interleaved
    rounds), the medians of the rounds' served/local ratios, how the server batched and the CPU
    time each path spent per image."""
    settings, rows = result["settings"], []
    for model, entry in result["summary"].items():
        for transport in settings["transports"]:
            served = entry[transport]
            rows.append([model, transport, num(entry["local_images_per_s"], 1),
                         num(entry["local_no_spin_images_per_s"], 1), num(served["served_images_per_s"], 1),
                         num(served["ratio"]), num(served["ratio_no_spin"]), num(served["images_per_request"], 1),
                         num(served["images_per_execution"], 1),
                         f"{num(entry['local_cpu_ms_per_image'], 1)} / {num(entry['local_no_spin_cpu_ms_per_image'], 1)}",
                         f"{num(served['client_cpu_ms_per_image'], 1)} + {num(served['server_cpu_ms_per_image'], 1)}"])
    header = ["model", "transport", "local images/s", "local, no spin", "served images/s",
              "served / local", "served / local, no spin", "images / request", "images / model execution",
              "CPU ms/image local / no spin", "CPU ms/image served (client + server)"]
    return markdown_table(header, rows) + (f"\n\nRatios: medians over {settings['repeats']} interleaved "
                                           f"rounds of each round's ratio.")


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


# ------------------------------------------------------------------ CPU inference, export, engines
@table("infer_throughput")
def infer_throughput(result: dict, **options) -> str:
    """Per model: the medians over rounds of the bare backend's, the pipeline's and decoding's
    images/s, and the median of the rounds' pipeline / bare ratios (both timed in one process)."""
    settings = result["settings"]
    rounds = settings["repeats"]
    header = ["model", "images", "input px", "batch", "bare backend img/s", "`infer` img/s",
              "decode alone img/s (1 thread)", f"`infer` / bare backend (median of {rounds} rounds)"]
    rows = [[case["model"], f"{case['images']} {case['source']}", case["image_size"], settings["batch"],
             num(case["median_bare_img_s"], 1), num(case["median_pipeline_img_s"], 1),
             num(case["median_decode_img_s"], 0), num(case["median_ratio"])]
            for case in result["summary"]["cases"]]
    return markdown_table(header, rows)


@table("infer_memory")
def infer_memory(result: dict, **options) -> str:
    """Per folder size: one `mlic-edge infer` process's resident memory along the rows, its peak."""
    first = result["runs"][0]
    header = ["images", "wall time s", "img/s", "RSS at 10% of rows MiB", "at 50% MiB", "at 90% MiB", "peak MiB",
              f"peak vs {first['images']} images MiB"]
    rows = [[run["images"], num(run["seconds"], 1), num(run["img_s"], 0), num(run["rss_at_10pct_mib"], 0),
             num(run["rss_at_50pct_mib"], 0), num(run["rss_at_90pct_mib"], 0), num(run["peak_mib"], 0),
             f"{run['peak_mib'] - first['peak_mib']:+.0f}"] for run in result["runs"]]
    return markdown_table(header, rows)


@table("engine_build")
def engine_build(result: dict, **options) -> str:
    """Per graph: its size, the engine's size and the median of the forced builds' times."""
    repeats = result["settings"]["repeats"]
    header = ["graph", "precision", "ONNX MiB", "engine MiB", f"build s (median of {repeats})", "builder"]
    rows = [[row["graph"], row["precision"], num(row["onnx_mib"], 1), num(row["engine_mib"], 1),
             num(row["median_build_seconds"], 1), row["runtime"]] for row in result["summary"]["engines"]]
    return markdown_table(header, rows)


@table("export_memory")
def export_memory(result: dict, **options) -> str:
    """Per export (one process each): wall time, peak RSS, and each stage's time and peak RSS."""
    header = ["export", "calibration images", "wall time s", "peak RSS GiB", "stages: s (peak RSS GiB)"]
    rows = [[run["export"], run["calib_images"] or "-", num(run["total_seconds"], 0), num(run["peak_gib"], 1),
             ", ".join(f"{name} {num(stage['seconds'], 0)} ({num(stage['peak_gib'], 1)})"
                       for name, stage in run["stages"].items())]
            for run in result["runs"]]
    return markdown_table(header, rows)


@table("preset_speed")
def preset_speed(result: dict, **options) -> str:
    """Per preset: the median images/s of the timed training and inference steps."""
    settings = result["settings"]
    steps = f"median of {settings['repeats']} rounds"
    header = ["preset", "batch", f"training img/s ({steps})", f"inference img/s ({steps})"]
    rows = [[f"`{name}`", row["batch"], num(row["train_img_s"]), num(row["infer_img_s"])]
            for name, row in result["summary"]["presets"].items()]
    return markdown_table(header, rows)
