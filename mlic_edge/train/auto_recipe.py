"""A recipe that fits the data: training settings derived from the model preset and the dataset.

Used when `mlic-edge train` gets a model preset or own data (`--data folder`) and no recipe file.
The paper's recipes (`configs/`) are tuned for 80 epochs on 8 GPUs; a user with 3,000 images and
a CPU needs a short schedule that still converges. The rule, every step of which is printed:

* image size: the preset's; images smaller than that are upsampled by UPSAMPLE (their median
  longer side rounded up to a multiple of 32, x 1.25, rounded up to 32 again; at most the
  preset's size). Measured with benchmarks/small_data_study.py on 128 px digits mosaics, 1,000
  images, 2 seeds, in the same time: 160 px for 8 epochs 97.41 mAP, 128 px for 12 epochs 96.46,
  224 px for 4 epochs 94.07; on 3,000 images, 160 px for 3 epochs 98.91, 128 px for 4 98.70.
  Likely why: ImageNet backbones see objects nearer the scale they were pretrained at, and the
  32-px feature grid grows from 4 x 4 to 5 x 5, while the full 224 px leaves too few epochs;
* epochs: enough for TARGET_IMAGES training images seen (a few minutes with lite0 at 128 px on 2
  CPU cores) at the images' own size, so an upsampled run trains fewer epochs in the same time
  ((side / size)^2 of them; likewise for a size given on the command line), between MIN_EPOCHS
  and MAX_EPOCHS;
* learning rate: 1e-3 for a 256-wide head (the quickstart's, measured), scaled by 256 / d_model
  (wider Transformers need smaller steps; the paper's 2048-wide head trains at 5e-5 over 80
  epochs) and kept within [1e-4, 1e-3];
* warm-up (one-cycle pct_start): 100 optimizer steps, as a share of the run, within [0.1, 0.3];
* EMA decay: an averaging window of a fifth of the run's steps (decay = 1 - 1/window), within
  [0.9, 0.9999] (the quickstart's 0.99 for ~300 steps; the paper's 0.9997 for ~50k);
* augmentation: RandAugment m5 below 30 epochs, the paper's m9 + Cutout from 30 (measured with
  benchmarks/small_data_study.py on 1,000 images, 12 epochs, 2 seeds: m5 96.46 mAP, none 92.83,
  m9 + Cutout 94.55; on 3,000 images, 4 epochs, one seed: m5 98.70, none 98.45);
* decision thresholds: with at least 200 training images, 10% of them are held out and each
  class gets its F1-optimal threshold on them (stored in best.pt; export and infer use them).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Recipe
from ..model.presets import Preset

TARGET_IMAGES = 12_000
MIN_EPOCHS, MAX_EPOCHS = 3, 30
BATCH_SIZE = 32
UPSAMPLE = 1.25           # small images: see the module docstring
HOLDOUT, HOLDOUT_MIN_IMAGES = 0.1, 200   # per-class thresholds: share of the training images held out
SIZE_SAMPLE = 200          # images whose size is read (headers only) to find the median side


@dataclass
class Derived:
    """The recipe and, per setting, the value and why (printed and stored in recipe.yaml)."""
    recipe: Recipe
    reasons: list[tuple[str, str, str]]    # (setting, value, why)

    def describe(self) -> str:
        width = max(len(s) for s, _, _ in self.reasons)
        lines = ["recipe derived from the model preset and the data (mlic_edge/train/auto_recipe.py):"]
        lines += [f"  {setting:<{width}}  {value:<10}  {why}" for setting, value, why in self.reasons]
        return "\n".join(lines)


def median_image_side(paths: Sequence[str | Path]) -> int | None:
    """Median longer side of up to SIZE_SAMPLE images (evenly spaced), read from headers only."""
    from PIL import Image

    if not paths:
        return None
    step = max(1, len(paths) // SIZE_SAMPLE)
    sides = []
    for path in list(paths)[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(path) as image:
                sides.append(max(image.size))
        except OSError:
            continue            # unreadable images are reported (and skipped) by the loader
    if not sides:
        return None
    sides.sort()
    return sides[len(sides) // 2]


def derive_for_dataset(base: Recipe, preset: Preset, image_size: int | None = None) -> Derived:
    """`derive_recipe` with the size and image sides of `base`'s training split."""
    from ..data import build_dataset

    train_set = build_dataset(base.data.name, base.data.root or None, base.data.train_split)
    side = median_image_side([path for path, _ in train_set.samples])
    return derive_recipe(base, preset, len(train_set), side, image_size)


def derive_recipe(base: Recipe, preset: Preset, num_train: int, image_side: int | None,
                  image_size: int | None = None) -> Derived:
    """`base` with model = the preset and train settings from the rule in the module docstring;
    `image_size` (the command line's) replaces the rule's size, and the epochs follow it."""
    reasons = [("model", preset.name, f"{preset.model['backbone']} ({preset.about}); default for own data")]
    size = preset.model["image_size"]
    side = None if image_side is None else max(64, 32 * math.ceil(image_side / 32))
    if image_size is not None:
        size = image_size
        reasons.append(("image_size", str(size), "given"))
    elif side is not None and side < size:
        size = min(size, 32 * math.ceil(side * UPSAMPLE / 32))
        reasons.append(("image_size", str(size), f"training images are {image_side} px (median longer side); small "
                                                 f"images train better upsampled (x {UPSAMPLE}, measured), up to the "
                                                 f"preset's {preset.model['image_size']}"))
    else:
        reasons.append(("image_size", str(size), "the preset's"))
    compute = min(1.0, (side / size) ** 2) if side is not None else 1.0   # per image, against the own size
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_IMAGES * compute / max(num_train, 1))))
    seen = f"{TARGET_IMAGES:,} images seen" + (f" x {compute:.2f} (same time at {size} px)" if compute < 1 else "")
    reasons.append(("epochs", str(epochs), f"{seen} / {num_train:,} training images, within [{MIN_EPOCHS}, {MAX_EPOCHS}]"))
    d_model = preset.model["d_model"]
    lr = min(1e-3, max(1e-4, 1e-3 * 256 / d_model))
    reasons.append(("lr", f"{lr:.2g}", f"1e-3 x 256 / d_model {d_model}, within [1e-4, 1e-3]"))
    steps = epochs * math.ceil(num_train / BATCH_SIZE)
    pct_start = min(0.3, max(0.1, 100 / max(steps, 1)))
    reasons.append(("pct_start", f"{pct_start:.2f}", f"100 warm-up steps of {steps}, within [0.1, 0.3]"))
    window = max(1.0, steps / 5)
    ema = min(0.9999, max(0.9, 1 - 1 / window))
    reasons.append(("ema_decay", f"{ema:.4g}", f"averages over ~{window:.0f} steps (a fifth of the run)"))
    if epochs < 30:
        randaugment, cutout, why = "rand-m5-mstd0.5-inc1", False, "RandAugment m5 below 30 epochs (measured best)"
    else:
        randaugment, cutout, why = "rand-m9-mstd0.5-inc1", True, "the paper's (RandAugment m9 + Cutout)"
    reasons.append(("augmentation", randaugment.split("-")[1] if randaugment else "none", why))
    holdout = HOLDOUT if num_train >= HOLDOUT_MIN_IMAGES else 0.0
    reasons.append(("thresholds", "per class" if holdout else "0.5",
                    f"F1-optimal per class on {holdout:.0%} of the training images, held out" if holdout
                    else f"one global 0.5: fewer than {HOLDOUT_MIN_IMAGES} training images to hold some out"))
    values = {f"model.{k}": v for k, v in preset.model.items()}
    values.update({"model.image_size": size, "train.epochs": epochs, "train.lr": lr, "train.batch_size": BATCH_SIZE,
                   "train.pct_start": round(pct_start, 4), "train.ema_decay": round(ema, 6),
                   "train.randaugment": randaugment, "train.cutout": cutout, "train.threshold_holdout": holdout})
    return Derived(base.with_values(values), reasons)
