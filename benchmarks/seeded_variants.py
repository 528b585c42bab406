"""Train one base recipe and variants of it (one change each) over several seeds, and summarise.

Shared by ablation_trends.py and small_data_study.py. A difference to the base counts as real
only when it is larger than the seed-to-seed spread (the two standard deviations added): with
two or three seeds anything smaller is noise.
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
from mlic_edge.train import run_training


def best_map(run_dir: Path) -> float:
    """The best test mAP of a run over its epochs, model or EMA weights (what best.pt keeps)."""
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(max(r.get("model_mAP", 0.0), r.get("ema_mAP", 0.0)) for r in history)


def train_variants(base: Recipe, variants: dict[str, dict], seeds: list[int],
                   recipe_for: Callable[[Recipe, dict], Recipe] | None = None) -> dict[str, list[float]]:
    """{variant: [best mAP per seed]}; each run starts from `base` with the variant's values
    (recipe_for(base, values) when a change needs more than with_values) and `train.seed`."""
    scores: dict[str, list[float]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlic-variants-") as tmp:
        for name, values in variants.items():
            for seed in seeds:
                recipe = recipe_for(base, values) if recipe_for else base.with_values(values)
                recipe = recipe.with_values({"train.seed": seed})
                out = Path(tmp) / "".join(c if c.isalnum() else "-" for c in f"{name}-{seed}")
                if run_training(recipe, out, show_progress=False) != 0:
                    raise SystemExit(f"{name} seed {seed}: training stopped")
                scores.setdefault(name, []).append(best_map(out))
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
    """Per variant: mean, sd, delta to the base and whether it exceeds the seed spread."""
    base_mean, base_sd = statistics.mean(scores[base]), spread(scores[base])
    rows = []
    for name, values in scores.items():
        mean, sd = statistics.mean(values), spread(values)
        rows.append({"setting": name, "mAP": values, "mean": mean, "sd": sd, "delta": mean - base_mean,
                     "beyond_spread": None if name == base else abs(mean - base_mean) > sd + base_sd,
                     "margin": sd + base_sd})
    return rows
