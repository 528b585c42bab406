#!/usr/bin/env python3
"""The paper's ablations (Tables IV-VI) in miniature: same data, same budget, several seeds.

    python benchmarks/ablation_trends.py                                  # digits demo set, 2 seeds
    python benchmarks/ablation_trends.py --seeds 0,1,2 --epochs 5 --steps 0 --json out.json --plot out.png

Base: the quickstart recipe (EfficientNet-Lite0 with the paper's head at d_model 256, iRPE encoder,
no decoder self-attention, APL). Each variant changes one thing: encoder standard / none (Table
IV), decoder self-attention all (Table V), loss ASL / BCE (Table VI). Every run trains from the
same ImageNet weights on the same data and reports its best test mAP. The table prints, per
variant, the mean and spread over seeds, its difference to the base, whether that difference is
larger than the seed-to-seed spread (the base's and the variant's standard deviations added), and
the paper's difference on COCO (docs/method.md) with whether the signs agree.
"""
from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

from seeded_variants import summarise, train_variants

from mlic_edge.config import Recipe
from mlic_edge.plots import plot_deltas

# COCO, ResNet101 @448 (docs/method.md, Tables IV-VI): mAP of each setting.
PAPER = {"base": 85.22, "encoder=standard": 84.90, "encoder=none": 84.72, "decoder self-attn=all": 85.14,
         "loss=asl": 85.15, "loss=bce": 84.92}
PAPER_BASE = {"encoder": 85.22, "decoder": 85.20, "loss": 85.20}   # each table's own base row
VARIANTS = {
    "base": {},
    "encoder=standard": {"model.encoder": "standard"},
    "encoder=none": {"model.encoder": "none"},
    "decoder self-attn=all": {"model.decoder_self_attn": "all"},
    "loss=asl": {"train.loss": "asl"},
    "loss=bce": {"train.loss": "bce"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps per epoch (0: whole epochs)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of the deltas with their seed spread")
    args = parser.parse_args()

    base = Recipe.load(resources.files("mlic_edge") / "resources" / "quickstart.yaml")
    base = base.with_values({"train.epochs": args.epochs, "train.max_steps_per_epoch": args.steps})
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    scores = train_variants(base, {name: VARIANTS[name] for name in args.variants.split(",")}, seeds)
    rows = summarise(scores)

    print(f"\n{'setting':24s} {'mAP mean':>9s} {'sd':>5s} {'delta':>7s} {'> spread':>9s} {'paper delta':>12s} {'same sign':>10s}")
    for row in rows:
        name, delta, beyond = row["setting"], row["delta"], row["beyond_spread"]
        table = name.split("=")[0].split()[0]
        paper_delta = PAPER[name] - PAPER_BASE.get(table, PAPER["base"]) if name != "base" else 0.0
        same = delta != 0 and (delta > 0) == (paper_delta > 0) if name != "base" else None
        row.update(paper_delta=paper_delta, same_sign=same)
        print(f"{name:24s} {row['mean']:9.2f} {row['sd']:5.2f} {delta:+7.2f} "
              f"{'' if beyond is None else ('yes' if beyond else 'no'):>9s} "
              f"{paper_delta:+12.2f} {'' if same is None else ('yes' if same else 'no'):>10s}")
    print(f"\n{len(seeds)} seeds, {args.epochs} epochs x {args.steps or 'all'} steps each; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json), "plot": str(args.plot)},
                                         "rows": rows}, indent=2))
    if args.plot:
        plot_deltas(rows, args.plot, f"paper ablations in miniature ({len(seeds)} seeds)")


if __name__ == "__main__":
    main()
