"""Train one base recipe and variants of it (one change each) over several seeds, and summarise.

Shared by ablation_trends.py and small_data_study.py, with the paper's ablations and their
published differences. A difference to the base counts as real only when it is larger than the
seed-to-seed spread (the two standard deviations added): with two or three seeds anything smaller
is noise.

Variants are named one per --variant flag (a name may hold a comma; a name given twice or not
in the table is an error), and a study's result file keeps every run as it ran: its variant,
seed and whole recipe, and its figures (`run_record`).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from result_files import new_result, read_result

from mlic_edge.config import Recipe
from mlic_edge.core.console import setup_logging
from mlic_edge.core.errors import TrainingInterrupted
from mlic_edge.train.api import train_recipe

# The paper's ablations (Tables IV-VI): one change each to its model (iRPE encoder, no decoder
# self-attention, APL). PAPER_DELTAS: that change's mAP difference on COCO, ResNet101 @448
# (docs/method.md), against its own table's base row (encoder 85.22, decoder and loss 85.20).
PAPER_VARIANTS = {
    "encoder standard": {"model.encoder": "standard"},
    "encoder none": {"model.encoder": "none"},
    "decoder self-attn all": {"model.decoder_self_attn": "all"},
    "loss asl": {"train.loss": "asl"},
    "loss bce": {"train.loss": "bce"},
}
PAPER_DELTAS = {"encoder standard": 84.90 - 85.22, "encoder none": 84.72 - 85.22,
                "decoder self-attn all": 85.14 - 85.20, "loss asl": 85.15 - 85.20, "loss bce": 84.92 - 85.20}


def add_variant_options(parser: argparse.ArgumentParser, table: dict[str, dict], default: list[str]) -> None:
    """--variant NAME (repeatable: a name may hold commas) and --seeds; `default` when no --variant."""
    parser.add_argument("--variant", dest="variants", action="append", metavar="NAME",
                        help=f"a variant to run, repeatable (default: {'; '.join(default)}); of: {'; '.join(table)}")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1], help="comma-separated seeds (default 0,1)")
    parser.set_defaults(default_variants=list(default))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is given twice in {text!r}")
    return seeds


def pick_variants(table: dict[str, dict], names: list[str] | None, default: list[str] | None = None) -> dict[str, dict]:
    """The variants named (in order; `default` when None), or a one-line error: a name not in
    `table` (the known ones listed), a name given twice, or none."""
    names = list(default or []) if names is None else list(names)
    unknown = [name for name in names if name not in table]
    if unknown or not names:
        raise SystemExit(f"--variant: unknown {', '.join(map(repr, unknown)) or 'none given'}; "
                         f"known: {'; '.join(table)}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SystemExit(f"--variant: {', '.join(map(repr, twice))} given twice (each variant runs once per seed)")
    return {name: table[name] for name in names}


def run_record(name: str, seed: int, values: dict, recipe: Recipe, run_dir: Path, wall_s: float) -> dict:
    """One run of a study as its result file keeps it: what ran (variant, its values, seed, the
    whole recipe) and what came out of metrics.jsonl: the test row (best.pt, selected on validation
    images, tested once; not the best test mAP over epochs, a best-of-N on the images it reports)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tested = [r for r in rows if r.get("split") == "test"]
    if not tested:
        raise SystemExit(f"{run_dir / 'metrics.jsonl'}: no test row (the data set has no test split)")
    test = tested[-1]
    return {"variant": name, "seed": seed, "values": values, "recipe": recipe.to_dict(),
            "test_mAP": test["mAP"], "test_CF1": test.get("CF1"), "selection_mAP": test.get("selection_mAP"),
            "selected_on": test.get("selected_on"), "selected_epoch": test.get("epoch"),
            "epochs_run": sum(1 for r in rows if r.get("split") != "test"), "stopped": test.get("stopped"),
            "wall_s": round(wall_s, 1)}


def train_variants(base: Recipe, variants: dict[str, dict], seeds: list[int],
                   recipe_for: Callable[[Recipe, dict], Recipe] | None = None) -> list[dict]:
    """One `run_record` per variant and seed; each run starts from `base` with the variant's
    values (recipe_for(base, values) when a change needs more than with_values) and `train.seed`."""
    runs: list[dict] = []
    setup_logging()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlic-variants-") as tmp:
        for name, values in variants.items():
            for seed in seeds:
                recipe = recipe_for(base, values) if recipe_for else base.with_values(values)
                recipe = recipe.with_values({"train.seed": seed})
                out = Path(tmp) / "".join(c if c.isalnum() else "-" for c in f"{name}-{seed}")
                run_started = time.perf_counter()
                try:
                    train_recipe(recipe, out, show_progress=False)
                except TrainingInterrupted:
                    raise SystemExit(f"{name} seed {seed}: training stopped") from None
                runs.append(run_record(name, seed, values, recipe, out, time.perf_counter() - run_started))
                print(f"{name:26s} seed {seed}: mAP {runs[-1]['test_mAP']:.2f}  ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return runs


def scores_of(runs: list[dict]) -> dict[str, list[float]]:
    """{variant: [test mAP per seed, by seed]}, variants in the order they first ran."""
    scores: dict[str, list[float]] = {}
    for run in sorted(runs, key=lambda run: run["seed"]):
        scores.setdefault(run["variant"], []).append(run["test_mAP"])
    return {name: scores[name] for name in dict.fromkeys(run["variant"] for run in runs)}


def runs_from_results(paths: list[Path]) -> list[dict]:
    """The runs of earlier result files of a study run in parts; a (variant, seed) given twice is
    an error (which one would the summary hold?)."""
    runs: dict[tuple[str, int], dict] = {}
    for path in paths:
        result = read_result(path)
        for run in result["runs"]:
            key = (run["variant"], run["seed"])
            if key in runs:
                raise SystemExit(f"{path}: {key[0]!r} seed {key[1]} is also in {runs[key]['result_file']}")
            runs[key] = {**run, "result_file": str(path), "command": result["command"]}
    return list(runs.values())


def runs_from_logs(paths: list[Path]) -> list[dict]:
    """The scores printed by `train_variants` ("<variant> seed <s>: mAP <x>") in logs of runs made
    before studies wrote result files: the test mAP alone (a later log's variant/seed wins)."""
    found: dict[tuple[str, int], dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            match = re.match(r"^(.+?)\s+seed (\d+): mAP ([\d.]+)", line)
            if match:
                found[match[1], int(match[2])] = {"variant": match[1], "seed": int(match[2]),
                                                  "test_mAP": float(match[3]), "log": str(path)}
    return list(found.values())


def study_result(name: str, settings: dict, runs: list[dict], rows: list[dict]) -> dict:
    """A study's result file (result_files.py): `settings` with the variants and seeds that ran
    (read from the runs), every run, and the summary rows."""
    result = new_result(name, {**settings, "variants": list(dict.fromkeys(run["variant"] for run in runs)),
                               "seeds": sorted({run["seed"] for run in runs})})
    result["runs"], result["summary"] = runs, {"rows": rows}
    return result


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(scores: dict[str, list[float]], base: str = "base") -> list[dict]:
    """Per variant: mean, sd, delta to the base, whether it exceeds the seed spread and, for the
    paper's ablations, the paper's delta and whether the signs agree (a delta that prints as 0.00
    has no sign)."""
    base_mean, base_sd = statistics.mean(scores[base]), spread(scores[base])
    rows = []
    for name, values in scores.items():
        mean, sd = statistics.mean(values), spread(values)
        delta, paper_delta = mean - base_mean, PAPER_DELTAS.get(name)
        same_sign = None if paper_delta is None else round(delta, 2) != 0 and (delta > 0) == (paper_delta > 0)
        rows.append({"setting": name, "mAP": values, "mean": mean, "sd": sd, "delta": delta,
                     "beyond_spread": None if name == base else abs(delta) > sd + base_sd,
                     "margin": sd + base_sd, "paper_delta": paper_delta, "same_sign": same_sign})
    return rows


def print_summary(rows: list[dict]) -> None:
    """The summary as a table; the paper columns only when a paper ablation is in it."""
    paper = any(row["paper_delta"] is not None for row in rows)
    width = max(len(row["setting"]) for row in rows) + 2
    yes_no = {None: "", True: "yes", False: "no"}
    print(f"\n{'setting':{width}s} {'mAP mean':>9s} {'sd':>5s} {'delta':>7s} {'> spread':>9s}"
          + (f" {'paper delta':>12s} {'same sign':>10s}" if paper else ""))
    for row in rows:
        line = (f"{row['setting']:{width}s} {row['mean']:9.2f} {row['sd']:5.2f} {row['delta']:+7.2f} "
                f"{yes_no[row['beyond_spread']]:>9s}")
        if paper:
            paper_delta = "" if row["paper_delta"] is None else f"{row['paper_delta']:+.2f}"
            line += f" {paper_delta:>12s} {yes_no[row['same_sign']]:>10s}"
        print(line)
