#!/usr/bin/env python3
"""What `mlic-edge train --data folder --data-root D` does on its own (#21): the own-data default
(train until the validation mAP stops improving, within a time budget) on two kinds of data, seeds.

    python benchmarks/own_data_rule.py --json own_data_rule.json --plot own_data_rule.png   # the README's
    python benchmarks/own_data_rule.py --from-json own_data_rule.json --plot own_data_rule.png  # re-print
    python benchmarks/own_data_rule.py --sets photos --seeds 0 --train-images 300 --test-images 100 --time 1 --runs /tmp/odr

Each run is the command a user types, run as a subprocess and timed from start to exit (start-up,
data loading, training, validation, the final test):

    python -m mlic_edge train --data folder --data-root D --out RUNS/<set>-seed<S> --seed S [--time MIN]

(--time only when this script is given one.) Data (by default 3,000 training and 1,000 test images
of 128 px, data seed 0; training seeds vary):
  * digits: the built-in demo's mosaics of real MNIST handwriting (mlic_edge/data/digits.py);
  * photos: photo-scenes, crops of real photos from scikit-image and scikit-learn pasted at many
    scales on cluttered backgrounds (benchmarks/photo_scenes.py).
Each run's result is read from RUNS/<set>-seed<S>/metrics.jsonl: its validation mAP per epoch, why
it stopped, and the test row (best.pt, tested once): mAP, CF1 at 0.5 and at the per-class
thresholds. The output of each run goes to RUNS/<set>-seed<S>.log, its result to
RUNS/<set>-seed<S>.json; a run whose folder already has a test row is not run again (an
interrupted measurement continues where it stopped), and --json is rewritten after every run.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from photo_scenes import build_photo_scenes

from mlic_edge.core.files import atomic_write_bytes, atomic_write_text, cache_dir
from mlic_edge.data.digits import build_digits_dataset

DATA_SEED = 0   # one data set per kind; the training seed is what varies between runs
SETS = ("digits", "photos")


def build_set(name: str, cache: Path, n_train: int, n_test: int, canvas: int) -> Path:
    if name == "digits":
        return build_digits_dataset(cache / "digits", seed=DATA_SEED, n_train=n_train, n_test=n_test, canvas=canvas)
    return build_photo_scenes(cache, seed=DATA_SEED, n_train=n_train, n_test=n_test, canvas=canvas)


def read_metrics(run_dir: Path) -> tuple[list[dict], dict | None]:
    """(per-epoch validation rows, the test row or None) of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return [], None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    test = next((row for row in rows if row.get("split") == "test"), None)
    return [row for row in rows if row.get("split") != "test"], test


def run_record(set_name: str, seed: int, run_dir: Path, wall_s: float | None, command: list[str]) -> dict:
    """What one finished run measured, from its metrics.jsonl and recipe.yaml."""
    epochs, test = read_metrics(run_dir)
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    per_class = test.get("per_class_thresholds", {})
    return {
        "set": set_name, "seed": seed, "run_dir": str(run_dir), "command": shlex.join(command),
        "wall_s": wall_s,
        "image_size": recipe["model"]["image_size"], "max_epochs": recipe["train"]["epochs"],
        "patience": recipe["train"]["patience"], "time_budget_min": recipe["train"]["time_budget"],
        "epochs_run": test.get("epochs_run", len(epochs)),
        "best_epoch": test["epoch"], "best_weights": test["weights"],
        "stopped": test.get("stopped"), "stop_detail": test.get("stop_detail"),
        "selection_mAP": test["selection_mAP"],
        "test_mAP": test["mAP"], "test_CF1": test["CF1"], "test_CF1_per_class": per_class.get("CF1"),
        # the better of model and EMA per epoch: what the stop rule and the selection compare
        "val_mAP": [max(row[k] for k in ("model_mAP", "ema_mAP") if k in row) for row in epochs if "model_mAP" in row],
    }


def train_command(root: Path, run_dir: Path, seed: int, time_budget: float | None) -> list[str]:
    command = [sys.executable, "-m", "mlic_edge", "train", "--data", "folder", "--data-root", str(root),
               "--out", str(run_dir), "--seed", str(seed)]
    return command + (["--time", f"{time_budget:g}"] if time_budget is not None else [])


def finished_record(set_name: str, seed: int, run_dir: Path, command: list[str]) -> dict | None:
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
        record = run_record(set_name, seed, run_dir, None, command)
        trained_on = yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["root"]
        same = trained_on == command[command.index("--data-root") + 1]
    if not same:
        raise SystemExit(f"{run_dir} was trained by another command ({record['command']}); "
                         f"use another --runs folder or remove it")
    return record


def train_once(set_name: str, seed: int, run_dir: Path, command: list[str]) -> dict:
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
    record = run_record(set_name, seed, run_dir, wall_s, command)
    atomic_write_text(record_path, json.dumps(record, indent=1))
    return record


def _mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} +- {np.std(values, ddof=1):.{digits}f}"


def print_table(records: list[dict]) -> None:
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    print("\n| data set | seed | wall time (s) | epochs | best epoch | stopped | test mAP | CF1 @0.5 | CF1 @per-class |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in records:
        print(f"| {r['set']} | {r['seed']} | {number(r['wall_s'], 0)} | {r['epochs_run']} | "
              f"{r['best_epoch']} ({r['best_weights']}) | {r['stopped'] or '-'} | {r['test_mAP']:.2f} | "
              f"{r['test_CF1']:.2f} | {number(r['test_CF1_per_class'], 2)} |")
    print("\n| data set | runs | test mAP | wall time (s) | epochs |")
    print("|---|---:|---:|---:|---:|")
    for set_name in dict.fromkeys(r["set"] for r in records):
        mine = [r for r in records if r["set"] == set_name]
        print(f"| {set_name} | {len(mine)} | {_mean_sd([r['test_mAP'] for r in mine], 2)} | "
              f"{_mean_sd([r['wall_s'] for r in mine if r['wall_s'] is not None], 0)} | "
              f"{_mean_sd([r['epochs_run'] for r in mine], 1)} |")
    for r in records:
        if r["stop_detail"]:
            print(f"\n{r['set']} seed {r['seed']}: {r['stopped']}: {r['stop_detail']}", end="")
    print()


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
        for r in (r for r in records if r["set"] == set_name):
            epochs = np.arange(1, len(r["val_mAP"]) + 1)
            line, = ax.plot(epochs, r["val_mAP"], marker=".", label=f"seed {r['seed']} ({r['stopped'] or 'end'})")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help=f"of: {', '.join(SETS)}")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (train --seed)")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--time", type=float, metavar="MINUTES", help="passed on as train --time (default: train's own)")
    parser.add_argument("--runs", type=Path, default=Path("runs/own-data-rule"), help="run folders, logs, records")
    parser.add_argument("--cache", type=Path, default=cache_dir(""),
                        help="where the data sets are built: CACHE/digits/..., CACHE/photo-scenes/... "
                             "(default $MLIC_EDGE_CACHE or ~/.cache/mlic-edge)")
    parser.add_argument("--json", type=Path, help="the runs' records, rewritten after each run")
    parser.add_argument("--plot", type=Path, help="PNG: validation mAP per epoch of every run")
    parser.add_argument("--from-json", type=Path, help="no training: print (and --plot) the records of this file")
    args = parser.parse_args()

    if args.from_json:
        records = json.loads(args.from_json.read_text())["runs"]
    else:
        set_names = args.sets.split(",")
        unknown = set(set_names) - set(SETS)
        if unknown:
            parser.error(f"--sets: unknown {', '.join(sorted(unknown))} (known: {', '.join(SETS)})")
        seeds = [int(s) for s in args.seeds.split(",")]
        records, total, done = [], len(set_names) * len(seeds), 0
        for set_name in set_names:
            started = time.perf_counter()
            root = build_set(set_name, args.cache, args.train_images, args.test_images, args.canvas)
            print(f"{set_name}: {root} ({time.perf_counter() - started:.0f} s to build or find)", flush=True)
            for seed in seeds:
                done += 1
                run_dir = args.runs / f"{set_name}-seed{seed}"
                command = train_command(root, run_dir, seed, args.time)
                record = finished_record(set_name, seed, run_dir, command)
                if record is None:
                    print(f"\n[{done}/{total}] {set_name} seed {seed}: python {shlex.join(command[1:])}", flush=True)
                    record = train_once(set_name, seed, run_dir, command)
                else:
                    print(f"\n[{done}/{total}] {set_name} seed {seed}: done before, in {run_dir}", flush=True)
                records.append(record)
                wall = "wall time not recorded" if record["wall_s"] is None else f"{record['wall_s']:.0f} s"
                print(f"[{done}/{total}] {set_name} seed {seed}: {wall}, {record['epochs_run']} epochs "
                      f"(best {record['best_epoch']}), stopped: {record['stopped']}, "
                      f"test mAP {record['test_mAP']:.2f}", flush=True)
                if args.json:
                    args_record = {k: str(v) for k, v in vars(args).items()}
                    atomic_write_text(args.json, json.dumps({"args": args_record, "runs": records}, indent=1))
    print_table(records)
    if args.plot:
        plot_runs(records, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
