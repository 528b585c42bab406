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
    wall time, the CPU cores it got on average (CPU time / wall time) and the load average (1 min)
    before and after it."""
    def load(value):
        return "-" if not value else num(value[0], 1)

    rows = [[SET_NAMES.get(run["set"], run["set"]), run.get("data_seed", "-"), run["seed"], run["epochs_run"],
             f"{run['best_epoch']} ({run['best_weights']})", run["stopped"] or "-",
             num(run["selection_mAP"]), num(run["test_mAP"]), num(run["test_CF1"]), num(run["test_CF1_per_class"]),
             num(run.get("wall_s"), 0), num(run.get("cores_used")),
             f"{load(run.get('load_before'))} / {load(run.get('load_after'))}"]
            for run in result["runs"]]
    return markdown_table(["data set", "data seed", "seed", "epochs", "best epoch", "stopped", "hold-out mAP",
                           "test mAP", "CF1 @0.5", "CF1 @per-class", "wall time (s)", "CPU cores used",
                           "load before / after"], rows)


# ---- the H200 study (benchmarks/h200_study_records.py): one record per run, hold-out and test


def _by_variant(result: dict) -> dict[str, list[dict]]:
    """Finished runs by the variant that ran, in the study's order; a repeat of a variant run by a
    job of its own (the study's comma-split job) is left out: the variant's own job counts."""
    variants: dict[str, list[dict]] = {}
    for run in result["runs"]:
        if run["finished"] and "repeat_of_job" not in run:
            variants.setdefault(run["variant"], []).append(run)
    return variants


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _compare(base: list[float], other: list[float]) -> tuple[float, bool] | None:
    """(other's mean - base's, whether the gap exceeds the two seed spreads added), None without figures."""
    if not base or not other:
        return None
    delta = statistics.mean(other) - statistics.mean(base)
    return delta, abs(delta) > _sd(base) + _sd(other)


def _delta_cells(comparison: tuple[float, bool] | None) -> list[str]:
    if comparison is None:
        return ["-", "-"]
    return [f"{comparison[0]:+.2f}", "yes" if comparison[1] else "no"]


def _scores(runs: list[dict], key: str) -> list[float]:
    return [run[key] for run in runs if run.get(key) is not None]


def _label(result: dict, variant: str) -> str:
    return result["settings"].get("labels", {}).get(variant, variant)


@table("h200-recipes")
def h200_recipes(result: dict, **options) -> str:
    """Per variant: test mAP per seed, its mean +- sd, the hold-out mAP it was selected on, CF1
    (means), epochs run (best)."""
    rows = []
    for variant, runs in _by_variant(result).items():
        epochs = ", ".join(str(run["epochs_run"]) for run in runs)
        best = ", ".join(str(run["best_epoch"]) for run in runs)
        rows.append([_label(result, variant), ", ".join(num(run["test_mAP"]) for run in runs),
                     mean_sd(_scores(runs, "test_mAP")), mean_sd(_scores(runs, "selection_mAP")),
                     f"{num(statistics.mean(_scores(runs, 'test_CF1')))} / "
                     f"{num(statistics.mean(_scores(runs, 'test_CF1_per_class')))}",
                     f"{epochs} ({best})"])
    return markdown_table(["recipe", "test mAP (per seed)", "test mAP", "hold-out mAP (selected on)",
                           "CF1 at 0.5 / at per-class thresholds", "epochs (best)"], rows)


@table("h200-changes")
def h200_changes(result: dict, kind: str = "recipe", **options) -> str:
    """One change at a time against the base: test mAP per seed and its delta, and the hold-out
    (development) mAP's delta, each marked when it exceeds the two seed spreads added. kind=paper:
    the paper's ablations, with the paper's delta and whether the signs agree; kind=recipe: the rest."""
    variants = _by_variant(result)
    paper = result["settings"].get("paper_deltas", {})
    base = variants["base"]
    rows = []
    for variant, runs in variants.items():
        if (variant in paper) != (kind == "paper") or (kind == "paper" and variant == "base"):
            continue
        test = _compare(_scores(base, "test_mAP"), _scores(runs, "test_mAP"))
        holdout = _compare(_scores(base, "selection_mAP"), _scores(runs, "selection_mAP"))
        row = [_label(result, variant), ", ".join(num(run["test_mAP"]) for run in runs),
               num(statistics.mean(_scores(runs, "test_mAP"))),
               *(_delta_cells(test) if variant != "base" else ["", ""]),
               num(statistics.mean(_scores(runs, "selection_mAP"))) if _scores(runs, "selection_mAP") else "-",
               *(_delta_cells(holdout) if variant != "base" else ["", ""])]
        if kind == "paper":
            row += [f"{paper[variant]:+.2f}", _same_sign(test, paper[variant]), _same_sign(holdout, paper[variant])]
        else:
            row.append(num(statistics.mean(_scores(runs, "test_CF1_per_class") or _scores(runs, "test_CF1"))))
        rows.append(row)
    header = ["change", "test mAP (per seed)", "test mean", "test delta", "beyond the spread",
              "hold-out mean", "hold-out delta", "beyond the spread"]
    header += (["paper's delta (COCO, ResNet101 @448)", "same sign (test)", "same sign (hold-out)"] if kind == "paper"
               else ["CF1 at per-class thresholds (at 0.5 without a hold-out)"])
    return markdown_table(header, rows)


def _same_sign(comparison: tuple[float, bool] | None, paper_delta: float) -> str:
    if comparison is None:
        return "-"
    return "yes" if (comparison[0] > 0) == (paper_delta > 0) else "no"


# Each choice the study can check: (choice, the data it was decided on, the variant that undoes
# it, which side the recipe took: "base" (the variant is what was rejected) or "variant").
DATA_11 = "test mAP, digits data seed 11 (1,000 training images)"
DATA_0 = "test mAP, digits data seed 0 (3,000 training images)"
STUDY_11 = f"{DATA_11}, 2 seeds; re-measured there with 3 seeds"
DECISIONS = {
    "small": [
        ("input upsampled x 1.25 (160 px for 8 epochs, not 128 px for 12: same time)",
         STUDY_11, "input 160 px for 8 epochs", "variant"),
        ("not the preset's full 224 px at the same time (4 epochs)",
         STUDY_11, "input 224 px for 4 epochs", "base"),
        ("RandAugment m5 below 30 epochs, not none",
         f"{DATA_11}, 2 seeds, and {DATA_0}, 1 seed", "no augmentation", "base"),
        ("RandAugment m5 below 30 epochs, not the paper's m9 + Cutout",
         STUDY_11, "RandAugment m9 + Cutout", "base"),
        ("EMA of the weights (window a fifth of the run)",
         f"not measured when chosen; kept after {STUDY_11}", "no EMA", "base"),
        ("one learning rate for backbone and head (no backbone scale)",
         STUDY_11, "backbone lr x0.1", "base"),
        ("10% of the training images held out (selection, thresholds, stop rule)",
         f"the protocol (the test is evaluated once); its cost: {STUDY_11}", "no threshold holdout", "base"),
        ("no label smoothing", STUDY_11, "label smoothing 0.1", "base"),
        ("iRPE ratio 1.9 (the paper's)", f"the paper; {STUDY_11}", "iRPE ratio 3 (exact offsets)", "base"),
        ("APL loss (the paper's), not BCE", f"the paper; {STUDY_11}", "loss bce", "base"),
        ("APL loss (the paper's), not ASL", f"the paper; {STUDY_11}", "loss asl", "base"),
        ("iRPE encoder (the paper's), not standard self-attention", f"the paper; {STUDY_11}",
         "encoder standard", "base"),
        ("an encoder (the paper's), not none", f"the paper; {STUDY_11}", "encoder none", "base"),
        ("decoder without self-attention (the paper's)", f"the paper; {STUDY_11}",
         "decoder self-attn all", "base"),
    ],
    "large": [
        ("stop rule (patience 3, cosine), not a fixed count of images seen",
         f"{DATA_0}, 3 seeds; one run on data seed 11; the own-data runs' test on digits and photo-scenes data seed 0",
         "stop rule without a time limit", "variant"),
        ("160 px (x 1.25) on 3,000 images of 128 px, not 128 px for 4 epochs",
         f"{DATA_11} (above); re-measured: {DATA_0}, 3 seeds", "input 128 px for 4 epochs", "base"),
        ("RandAugment m5 on a 3-epoch run, not none", f"{DATA_0}, 1 seed; re-measured there with 3 seeds",
         "no augmentation", "base"),
    ],
}


def _verdict(comparison: tuple[float, bool] | None, chosen: str) -> str:
    """Whether the hold-out (development) figures back the side the recipe took."""
    if comparison is None:
        return "not checkable: the variant holds nothing out"
    delta, beyond = comparison
    backed = (delta > 0) == (chosen == "variant")
    if backed:
        return "yes" if beyond else "leans yes (within the seed spread)"
    return "no" if beyond else "open: leans the other way (within the seed spread)"


@table("decisions")
def decisions(result: dict, **options) -> str:
    """Per design choice: the data it was decided on, the test delta it was judged by (variant -
    base), the hold-out (development) delta of the same runs, and whether the hold-out backs it."""
    variants = _by_variant(result)
    base = variants["base"]
    rows = []
    for choice, decided_on, variant, chosen in DECISIONS[result["settings"]["study"]]:
        runs = variants.get(variant, [])
        test = _compare(_scores(base, "test_mAP"), _scores(runs, "test_mAP"))
        holdout = _compare(_scores(base, "selection_mAP"), _scores(runs, "selection_mAP"))
        rows.append([choice, decided_on, _label(result, variant), _delta_cells(test)[0],
                     " ".join(_delta_cells(holdout)).replace(" yes", " (beyond the spread)").replace(" no", "")
                     if holdout else "-", _verdict(holdout, chosen)])
    return markdown_table(["choice", "decided on", "variant that undoes it", "test delta (touched)",
                           "hold-out delta (development)", "stands on development data"], rows)
