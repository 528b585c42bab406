#!/usr/bin/env python3
"""What helps a short CPU run on small data (#13): one change at a time against the derived recipe.

    python benchmarks/small_data_study.py                       # 1,000-image digits set, 2 seeds
    python benchmarks/small_data_study.py --seeds 0,1,2 --json study.json --plot study.png
    python benchmarks/small_data_study.py --from-results part1.json part2.json --json study.json   # summarise parts
    python benchmarks/small_data_study.py --variant base --variant "encoder none" --variant "loss bce"
    python benchmarks/small_data_study.py --image-size 128        # the README's base: 128 px, 12 epochs
    bash benchmarks/gpu_study.sh OUT                              # the README's tables, on a GPU, in parallel

Data: the digits mosaics (real MNIST handwriting) at a harder setting than the README's example:
1,000 training images (a third), 128 px, test on 500 mosaics of unseen handwriting. Base: what
`mlic-edge train --data folder --data-root D` derives for that set with the default preset
(train/auto_recipe.py: lite0-224 at 160 px for 8 epochs, lr 1e-3, RandAugment m5, EMA, 10% held
out to select the best epoch and fit the thresholds on), or with --image-size what `train --image-size` derives (the epochs, warm-up
and EMA follow the size). The README's table was measured against the rule before this study's
input-size rows changed it, 128 px for 12 epochs: the --image-size 128 line above.
Every variant trains from the same ImageNet weights and changes one setting: backbone
learning-rate scaling, label smoothing, input size (at the same compute: fewer epochs), augmentation
strength, EMA, the iRPE ratio on the small grid; on request the learning rate, training on all
images without per-class thresholds, and the paper's ablations (Tables IV-VI: encoder, decoder
self-attention, loss; their published deltas print beside ours). The table gives each one's delta
to the base and whether it exceeds the seed-to-seed spread; only those that do are evidence for
changing a default. Each run's score is its test row: best.pt, selected on the held-out images,
tested once (the README's table was measured before #21, on the best test mAP over epochs).

A larger set, for a GPU's budget (the derived recipe scales its epochs to the set):
--train-images 5000 --test-images 1000 --canvas 224 --seeds 0,1,2.

--json writes the study's result file (benchmarks/result_files.py): the settings, the variants
and seeds that ran, and every run (its recipe, test mAP and CF1, the validation mAP it was
selected on, epochs, wall time).
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
    runs_from_logs,
    runs_from_results,
    scores_of,
    study_result,
    summarise,
    train_variants,
)

from mlic_edge.config import Recipe
from mlic_edge.data.digits import build_digits_dataset
from mlic_edge.data.registry import default_splits
from mlic_edge.model.presets import DEFAULT_PRESET, get_preset
from mlic_edge.plots import plot_deltas
from mlic_edge.train.auto_recipe import derive_for_dataset

VARIANTS = {
    "base": {},
    "backbone lr x0.1": {"train.backbone_lr_scale": 0.1},
    "label smoothing 0.1": {"train.loss_args": {"label_smoothing": 0.1}},
    # input sizes keep the base's epochs unless named; on the 128 px images 12 epochs at 128 px,
    # 8 at 160 px and 4 at 224 px cost about the same ((size / 128)^2 per epoch)
    "input 96 px": {"model.image_size": 96},
    "input 128 px": {"model.image_size": 128},
    "input 160 px": {"model.image_size": 160},
    "input 128 px for 12 epochs": {"model.image_size": 128, "train.epochs": 12},   # the rule before
    "input 160 px for 8 epochs": {"model.image_size": 160, "train.epochs": 8},
    "input 224 px for 4 epochs": {"model.image_size": 224, "train.epochs": 4},     # the preset's size
    # the README's own-data rows on the 3,000-image set (base there: 160 px for 3 epochs)
    "input 128 px for 4 epochs": {"model.image_size": 128, "train.epochs": 4},
    "input 128 px for 4 epochs without augmentation": {"model.image_size": 128, "train.epochs": 4,
                                                       "train.randaugment": "", "train.cutout": False},
    # `train`'s own-data stop rule where time does not bind (a GPU): patience 3, cosine to 30 epochs
    "stop rule without a time limit": {"train.epochs": 30, "train.patience": 3, "train.schedule": "cosine",
                                       "train.time_budget": 0.0},
    "no augmentation": {"train.randaugment": "", "train.cutout": False},
    "RandAugment m9 + Cutout": {"train.randaugment": "rand-m9-mstd0.5-inc1", "train.cutout": True},
    "no EMA": {"train.ema_decay": 0.0},
    "iRPE ratio 3 (exact offsets)": {"model.irpe_ratio": 3.0},
    "lr x2": {"lr_factor": 2.0},
    "lr x0.5": {"lr_factor": 0.5},
    # trains on all images, keeps the last epoch's EMA (nothing to select on) and the global 0.5
    # (compare CF1 in the runs' tables, not only mAP)
    "no threshold holdout": {"train.threshold_holdout": 0.0},
    # the paper's ablations (Tables IV-VI, as in ablation_trends.py) at this budget
    **PAPER_VARIANTS,
}
# What #13 asks about; the rest run on request (--variant) -- each costs 2 runs of ~5 min.
DEFAULT_VARIANTS = ["base", "backbone lr x0.1", "label smoothing 0.1", "input 128 px for 12 epochs",
                    "input 224 px for 4 epochs", "no augmentation", "RandAugment m9 + Cutout", "no EMA",
                    "iRPE ratio 3 (exact offsets)"]


def with_variant(base: Recipe, values: dict) -> Recipe:
    """The base with a variant's values; lr_factor scales the derived learning rate."""
    values = dict(values)
    factor = values.pop("lr_factor", None)
    if factor is not None:
        values["train.lr"] = base.train.lr * factor
    return base.with_values(values)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_variant_options(parser, VARIANTS, DEFAULT_VARIANTS)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--data-seed", type=int, default=11, help="digits set seed (not the README's 7)")
    parser.add_argument("--cache", type=Path, default=Path("runs/study-data"))
    parser.add_argument("--image-size", type=int, help="derive the base for this input size, as train --image-size")
    parser.add_argument("--set", dest="set_", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a recipe field for every run (as train --set), e.g. train.amp=off (repeatable)")
    parser.add_argument("--json", type=Path, help="the study's result file")
    parser.add_argument("--plot", type=Path, help="PNG of the deltas with their seed spread")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--from-results", type=Path, nargs="+", help="no training: summarise these result files' runs")
    parts.add_argument("--from-logs", type=Path, nargs="+",
                       help="no training: summarise the test mAPs printed in logs of runs without result files")
    parts.add_argument("--data-only", action="store_true",
                       help="build (or find) the data set and check the --variant names, then stop")
    return parser.parse_args(argv)


def base_recipe(args: argparse.Namespace):
    """(the derived recipe, the base every variant starts from: it with the --set items)."""
    root = build_digits_dataset(args.cache, seed=args.data_seed, n_train=args.train_images,
                                n_test=args.test_images, canvas=args.canvas)
    recipe = Recipe().with_values({"data.name": "folder", "data.root": str(root)})
    derived = derive_for_dataset(recipe.with_splits(*default_splits("folder")), get_preset(DEFAULT_PRESET),
                                 args.image_size)
    # a study at the same compute: the images-seen epochs as a fixed count (one-cycle), not the
    # own-data stop rule (patience, time budget) that `train` uses without --epochs
    derived = derive_for_dataset(recipe.with_splits(*default_splits("folder")), get_preset(DEFAULT_PRESET),
                                 args.image_size, given={"train.epochs": derived.planned_epochs})
    return derived, derived.recipe.with_overrides(args.set_)


def main() -> None:
    args = parse_args()
    derived, base = base_recipe(args)
    if args.data_only:
        if args.variants:            # names a later run will be given, checked now
            pick_variants(VARIANTS, args.variants)
        return
    print(derived.describe() + "".join(f"\n  --set {item}  (every run)" for item in args.set_), flush=True)
    started = time.perf_counter()
    if args.from_results or args.from_logs:
        runs = runs_from_results(args.from_results) if args.from_results else runs_from_logs(args.from_logs)
        # each run keeps its own recipe and command: this process's options did not make them
        settings = {"summarised": [str(path) for path in args.from_results or args.from_logs]}
    else:
        runs = train_variants(base, pick_variants(VARIANTS, args.variants, args.default_variants), args.seeds,
                              recipe_for=with_variant)
        settings = {"train_images": args.train_images, "test_images": args.test_images, "canvas": args.canvas,
                    "data_seed": args.data_seed, "image_size": args.image_size, "set": args.set_,
                    "base_recipe": base.to_dict(), "derived": derived.describe()}
    scores = scores_of(runs)
    rows = summarise(scores) if "base" in scores else []
    if args.json:
        write_result(args.json, study_result("small_data_study", settings, runs, rows))
    if not rows:
        print("\nno base in this run: summarise it with the base's run, --from-results BASE.json THIS.json")
        return
    n_seeds = max(len(values) for values in scores.values())
    print_summary(rows)
    print(f"\n{n_seeds} seeds, base {base.model.image_size} px for {base.train.epochs} epochs on {args.train_images} images"
          + ("" if args.from_results or args.from_logs else f"; {time.perf_counter() - started:.0f} s in all"))
    if args.plot:
        plot_deltas(rows, args.plot, f"small-data study: {args.train_images} images, {n_seeds} seeds")


if __name__ == "__main__":
    main()
