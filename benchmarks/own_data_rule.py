#!/usr/bin/env python3
"""What `mlic-edge train --data folder --data-root D` does on its own: the own-data default (train
until the validation mAP stops improving, within a time budget) on several kinds of data, seeds.

    python benchmarks/own_data_rule.py --plan benchmarks/own_data_untouched.yaml \
        --out benchmarks/results/2026-12-06-own-data-untouched/own_data_untouched.json \
        --plot benchmarks/results/2026-12-06-own-data-untouched/own_data_untouched.png
    python benchmarks/own_data_rule.py --from-result RESULT.json --plot P.png   # re-print, re-plot
    python benchmarks/own_data_rule.py --plan PLAN.yaml --time 1 --runs /tmp/odr --out /tmp/odr.json

Each run is the command a user types, run as a subprocess and timed from start to exit (start-up,
data loading, training, validation, the final test):

    python -m mlic_edge train --data folder --data-root D --out RUNS/<set>-data<D>-seed<S> --seed S [--time MIN]

(--time only when this script is given one.) The plan (YAML) names the image counts and, per set,
the runs as lists: data_seeds[i] with seeds[i]. Sets:
  * digits: the built-in demo's mosaics of real MNIST handwriting (mlic_edge/data/digits.py);
  * photos: photo-scenes, crops of real photos pasted on cluttered backgrounds (photo_scenes.py);
  * mosaics: region-mosaics, images tiled into regions filled from medical, terrain, microscopy,
    drawn and face images (region_mosaics.py).
Runs go seed-major (every set's first run, then every set's second, ...): a measurement cut short
still covers every set. Each run's record is read from RUNS/<name>/metrics.jsonl: its validation
mAP per epoch, why it stopped, and the test row (best.pt, tested once): mAP, CF1 at 0.5 and at the
per-class thresholds; with the wall time and the load average before and after the run (the
machine may be shared). The output of each run goes to RUNS/<name>.log, its record to
RUNS/<name>.json; a run whose folder already has a test row is not run again (an interrupted
measurement continues where it stopped), and the result file (--out, benchmarks/result_files.py)
is rewritten after every run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from photo_scenes import build_photo_scenes
from region_mosaics import build_region_mosaics
from result_files import new_result, read_result, write_result
from tables import TABLES

from mlic_edge.core.files import atomic_write_bytes, atomic_write_text, cache_dir
from mlic_edge.data.digits import build_digits_dataset

# set name -> builder(cache, seed, n_train, n_test, canvas) -> folder
SETS = {
    "digits": lambda cache, seed, *sizes: build_digits_dataset(cache / "digits", seed, *sizes),
    "photos": build_photo_scenes,
    "mosaics": build_region_mosaics,
}


def read_plan(path: Path) -> tuple[dict, list[dict]]:
    """(image counts, runs in seed-major order) of a plan file."""
    plan = yaml.safe_load(path.read_text())
    images = {"train": 3000, "test": 1000, "canvas": 128, **(plan.get("images") or {})}
    per_set = []
    for entry in plan["sets"]:
        if entry["set"] not in SETS:
            raise SystemExit(f"{path}: unknown set {entry['set']!r} (known: {', '.join(SETS)})")
        if len(entry["data_seeds"]) != len(entry["seeds"]):
            raise SystemExit(f"{path}: {entry['set']}: data_seeds and seeds differ in length")
        per_set.append([{"set": entry["set"], "data_seed": int(d), "seed": int(s)}
                        for d, s in zip(entry["data_seeds"], entry["seeds"])])
    rounds = max(len(runs) for runs in per_set)
    return images, [runs[i] for i in range(rounds) for runs in per_set if i < len(runs)]


def run_name(run: dict) -> str:
    return f"{run['set']}-data{run['data_seed']}-seed{run['seed']}"


def read_metrics(run_dir: Path) -> tuple[list[dict], dict | None]:
    """(per-epoch validation rows, the test row or None) of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return [], None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    test = next((row for row in rows if row.get("split") == "test"), None)
    return [row for row in rows if row.get("split") != "test"], test


def run_record(run: dict, run_dir: Path, command: list[str], timing: dict) -> dict:
    """What one finished run measured, from its metrics.jsonl and recipe.yaml; `timing` holds the
    wall time and the load averages around the run (None where not recorded)."""
    epochs, test = read_metrics(run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    per_class = test.get("per_class_thresholds", {})
    return {
        **run, "run_dir": str(run_dir), "command": shlex.join(command), **timing,
        "image_size": recipe["model"]["image_size"], "max_epochs": recipe["train"]["epochs"],
        "patience": recipe["train"]["patience"], "time_budget_min": recipe["train"]["time_budget"],
        "epochs_run": test.get("epochs_run", len(epochs)),
        "best_epoch": test["epoch"], "best_weights": test["weights"],
        "stopped": test.get("stopped"), "stop_detail": test.get("stop_detail"),
        "selection_mAP": test["selection_mAP"],
        "test_mAP": test["mAP"], "test_CF1": test["CF1"], "test_CF1_per_class": per_class.get("CF1"),
        # the better of model and EMA per epoch: what the stop rule and the selection compare
        "val_mAP": [max(row[k] for k in ("model_mAP", "ema_mAP") if k in row) for row in epochs if "model_mAP" in row],
        "epoch_rows": epochs,
    }


def train_command(root: Path, run_dir: Path, seed: int, time_budget: float | None) -> list[str]:
    command = [sys.executable, "-m", "mlic_edge", "train", "--data", "folder", "--data-root", str(root),
               "--out", str(run_dir), "--seed", str(seed)]
    return command + (["--time", f"{time_budget:g}"] if time_budget is not None else [])


NO_TIMING = {"wall_s": None, "load_before": None, "load_after": None}


def finished_record(run: dict, run_dir: Path, command: list[str]) -> dict | None:
    """The record of a run that already has a test row (None if it has none); one made by another
    command (other data, another --time) stops the script rather than be mixed in."""
    if read_metrics(run_dir)[1] is None:
        return None
    record_path = run_dir.parent / f"{run_dir.name}.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        same = shlex.split(record["command"])[1:] == command[1:]   # the interpreter's path may differ
    else:
        # finished, but its record (wall time) is gone: the results stay readable from the run
        record = run_record(run, run_dir, command, NO_TIMING)
        trained_on = yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["root"]
        same = trained_on == command[command.index("--data-root") + 1]
    if not same:
        raise SystemExit(f"{run_dir} was trained by another command ({record['command']}); "
                         f"use another --runs folder or remove it")
    return record


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def train_once(run: dict, run_dir: Path, command: list[str]) -> dict:
    """Run `train` as a user would, its output echoed and logged; its record, also saved beside it."""
    log_path = run_dir.parent / f"{run_dir.name}.log"
    record_path = run_dir.parent / f"{run_dir.name}.json"
    if run_dir.exists():
        # an interrupted run: a resumed one would not time as a whole, so it starts again
        print(f"{run_dir} has no test row: removing it and training again", flush=True)
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # unbuffered: the output is echoed as it comes, not in blocks when the run ends
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    load_before, children_before = load_average(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        started = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
        wall_s = time.perf_counter() - started
        log.write(f"# exit status {proc.returncode}, wall time {wall_s:.1f} s\n")
    if proc.returncode != 0 or read_metrics(run_dir)[1] is None:
        raise SystemExit(f"{run_dir.name}: train exited with status {proc.returncode} and no test row; see {log_path}")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    # the load average counts waiting processes whatever their priority; the CPU time the run got
    # (cores_used = CPU s / wall s) says how much of the machine it had
    timing = {"wall_s": round(wall_s, 1), "load_before": load_before, "load_after": load_average(),
              "cpu_s": round(cpu_s, 1), "cores_used": round(cpu_s / wall_s, 2), "nice": os.nice(0)}
    record = run_record(run, run_dir, command, timing)
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return record


def plot_runs(records: list[dict], path: Path) -> None:
    """Validation mAP per epoch of every run, one panel per data set; the best epoch (the one
    tested) as a dot, the last epoch (where the rule stopped) as a cross."""
    import matplotlib
    matplotlib.use("Agg")   # files only; never open a window
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    set_names = list(dict.fromkeys(r["set"] for r in records))
    fig, axes = plt.subplots(1, len(set_names), figsize=(5.5 * len(set_names), 3.8), squeeze=False)
    for ax, set_name in zip(axes[0], set_names):
        for r in (r for r in records if r["set"] == set_name and r["val_mAP"]):   # none: cut before validating
            epochs = np.arange(1, len(r["val_mAP"]) + 1)
            line, = ax.plot(epochs, r["val_mAP"], marker=".", label=f"data {r.get('data_seed', '-')}, seed {r['seed']} ({r['stopped'] or 'end'})")
            ax.plot(r["best_epoch"], r["val_mAP"][r["best_epoch"] - 1], "o", color=line.get_color(), ms=8)
            ax.plot(epochs[-1], r["val_mAP"][-1], "x", color=line.get_color(), ms=10, mew=2)
        ax.set(title=f"{set_name}: validation mAP (o best, x stop)", xlabel="epoch", ylabel="mAP (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def build_sets(runs: list[dict], images: dict, cache: Path) -> dict[tuple[str, int], Path]:
    """{(set, data seed): folder}, every set built (or found in the cache) before the first run."""
    roots = {}
    for key in dict.fromkeys((run["set"], run["data_seed"]) for run in runs):
        started = time.perf_counter()
        roots[key] = SETS[key[0]](cache, key[1], images["train"], images["test"], images["canvas"])
        print(f"{key[0]} data seed {key[1]}: {roots[key]} ({time.perf_counter() - started:.0f} s to build or find)",
              flush=True)
    return roots


def summarise(records: list[dict]) -> dict:
    """Per set: runs, test mAP mean and sample sd (None for one run)."""
    summary = {}
    for set_name in dict.fromkeys(r["set"] for r in records):
        test = [r["test_mAP"] for r in records if r["set"] == set_name]
        summary[set_name] = {"runs": len(test), "test_mAP_mean": float(np.mean(test)),
                             "test_mAP_sd": float(np.std(test, ddof=1)) if len(test) > 1 else None}
    return summary


def measure(args: argparse.Namespace) -> dict:
    """Every run of the plan (those done before read back), the result file rewritten after each."""
    images, runs = read_plan(args.plan)
    roots = build_sets(runs, images, args.cache)
    settings = {"plan": str(args.plan), "images": images, "runs": runs, "time_budget_min": args.time,
                "runs_folder": str(args.runs), "cache": str(args.cache)}
    result = new_result("own-data-untouched", settings)
    for done, run in enumerate(runs, 1):
        run_dir = args.runs / run_name(run)
        command = train_command(roots[run["set"], run["data_seed"]], run_dir, run["seed"], args.time)
        record = finished_record(run, run_dir, command)
        if record is None:
            print(f"\n[{done}/{len(runs)}] {run_name(run)}: python {shlex.join(command[1:])}", flush=True)
            record = train_once(run, run_dir, command)
        else:
            print(f"\n[{done}/{len(runs)}] {run_name(run)}: done before, in {run_dir}", flush=True)
        result["runs"].append(record)
        result["summary"] = summarise(result["runs"])
        wall = "wall time not recorded" if record["wall_s"] is None else f"{record['wall_s']:.0f} s"
        print(f"[{done}/{len(runs)}] {run_name(run)}: {wall}, {record['epochs_run']} epochs "
              f"(best {record['best_epoch']}), stopped: {record['stopped']}, "
              f"test mAP {record['test_mAP']:.2f}", flush=True)
        if args.out:
            write_result(args.out, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=Path("benchmarks/own_data_untouched.yaml"),
                        help="YAML: image counts and, per set, data_seeds and seeds (lists)")
    parser.add_argument("--time", type=float, metavar="MINUTES", help="passed on as train --time (default: train's own)")
    parser.add_argument("--runs", type=Path, default=Path("runs/own-data-rule"), help="run folders, logs, records")
    parser.add_argument("--cache", type=Path, default=cache_dir(""),
                        help="where the data sets are built: CACHE/digits/..., CACHE/photo-scenes/..., "
                             "CACHE/region-mosaics/... (default $MLIC_EDGE_CACHE or ~/.cache/mlic-edge)")
    parser.add_argument("--out", type=Path, help="the result file, rewritten after each run")
    parser.add_argument("--plot", type=Path, help="PNG: validation mAP per epoch of every run")
    parser.add_argument("--from-result", type=Path, help="no training: print (and --plot) this result file")
    args = parser.parse_args()

    result = read_result(args.from_result) if args.from_result else measure(args)
    for name in ("own-data-runs", "own-data-sets"):
        print("\n" + TABLES[name](result))
    if args.plot:
        plot_runs(result["runs"], args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
