#!/usr/bin/env python3
"""The paper's ablations (Tables IV-VI) in miniature: same data, same budget, several seeds.

    python benchmarks/ablation_trends.py                                  # digits demo set, 2 seeds
    python benchmarks/ablation_trends.py --seeds 0,1,2 --epochs 5 --steps 0 --json out.json --plot out.png
    python benchmarks/ablation_trends.py --variant base --variant "encoder none"

Base: the quickstart recipe (EfficientNet-Lite0 with the paper's head at d_model 256, iRPE encoder,
no decoder self-attention, APL). Each variant changes one thing: encoder standard / none (Table
IV), decoder self-attention all (Table V), loss ASL / BCE (Table VI). Every run trains from the
same ImageNet weights on the same data and reports its test mAP: best.pt (selected on a hold-out
of the training images, the quickstart recipe's train.threshold_holdout) tested once, at the end
(tables measured before #21 took the best test mAP over epochs). The table prints, per
variant, the mean and spread over seeds, its difference to the base, whether that difference is
larger than the seed-to-seed spread (the base's and the variant's standard deviations added), and
the paper's difference on COCO (docs/method.md) with whether the signs agree. --json writes the
result file (benchmarks/result_files.py): the settings and every run (recipe, test mAP, CF1,
validation mAP, epochs, wall time).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from result_files import write_result
from seeded_variants import (
    PAPER_VARIANTS,
    add_variant_options,
    pick_variants,
    print_summary,
    scores_of,
    study_result,
    summarise,
    train_variants,
)

from mlic_edge.config import Recipe
from mlic_edge.plots import plot_deltas

VARIANTS = {"base": {}, **PAPER_VARIANTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variant_options(parser, VARIANTS, list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps per epoch (0: whole epochs)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of the deltas with their seed spread")
    args = parser.parse_args()

    base = Recipe.load("quickstart")
    base = base.with_values({"train.epochs": args.epochs, "train.max_steps_per_epoch": args.steps})
    seeds = args.seeds
    started = time.perf_counter()
    runs = train_variants(base, pick_variants(VARIANTS, args.variants, args.default_variants), seeds)
    rows = summarise(scores_of(runs))

    print_summary(rows)
    print(f"\n{len(seeds)} seeds, {args.epochs} epochs x {args.steps or 'all'} steps each; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        settings = {"epochs": args.epochs, "steps_per_epoch": args.steps, "base_recipe": base.to_dict()}
        write_result(args.json, study_result("ablation_trends", settings, runs, rows))
    if args.plot:
        plot_deltas(rows, args.plot, f"paper ablations in miniature ({len(seeds)} seeds)")


if __name__ == "__main__":
    main()
