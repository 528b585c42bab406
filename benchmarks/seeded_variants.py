"""Train one base recipe and variants of it (one change each) over several seeds, and summarise.

Shared by ablation_trends.py and small_data_study.py, with the paper's ablations and their
published differences. A difference to the base counts as real only when it is larger than the
seed-to-seed spread (the two standard deviations added): with two or three seeds anything smaller
is noise.
"""
from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


def pick_variants(table: dict[str, dict], spec: str) -> dict[str, dict]:
    """The variants a comma-separated --variants names, or a one-line error listing the known ones."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in table]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown {', '.join(map(repr, unknown)) or 'none given'}; "
                         f"known: {', '.join(table)}")
    return {name: table[name] for name in names}


def final_test_map(run_dir: Path) -> float:
    """The run's test mAP: its one test row (best.pt, selected on validation images, tested once),
    not the best test mAP over epochs (a best-of-N on the images it reports)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tested = [r for r in rows if r.get("split") == "test"]
    if not tested:
        raise SystemExit(f"{run_dir / 'metrics.jsonl'}: no test row (the data set has no test split)")
    return tested[-1]["mAP"]


def train_variants(base: Recipe, variants: dict[str, dict], seeds: list[int],
                   recipe_for: Callable[[Recipe, dict], Recipe] | None = None) -> dict[str, list[float]]:
    """{variant: [test mAP per seed]}; each run starts from `base` with the variant's values
    (recipe_for(base, values) when a change needs more than with_values) and `train.seed`."""
    scores: dict[str, list[float]] = {}
    setup_logging()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlic-variants-") as tmp:
        for name, values in variants.items():
            for seed in seeds:
                recipe = recipe_for(base, values) if recipe_for else base.with_values(values)
                recipe = recipe.with_values({"train.seed": seed})
                out = Path(tmp) / "".join(c if c.isalnum() else "-" for c in f"{name}-{seed}")
                try:
                    train_recipe(recipe, out, show_progress=False)
                except TrainingInterrupted:
                    raise SystemExit(f"{name} seed {seed}: training stopped") from None
                scores.setdefault(name, []).append(final_test_map(out))
                print(f"{name:26s} seed {seed}: mAP {scores[name][-1]:.2f}  ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return scores


def scores_from_logs(paths: list[Path]) -> dict[str, list[float]]:
    """The scores printed by `train_variants` ("<variant> seed <s>: mAP <x>") in earlier runs'
    logs, to summarise a study run in parts (a later log's variant/seed wins)."""
    found: dict[str, dict[int, float]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            match = re.match(r"^(.+?)\s+seed (\d+): mAP ([\d.]+)", line)
            if match:
                found.setdefault(match[1], {})[int(match[2])] = float(match[3])
    return {name: [seeds[s] for s in sorted(seeds)] for name, seeds in found.items()}


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
