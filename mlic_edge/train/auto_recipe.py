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
* when to stop (with validation images: val.csv or the hold-out below, and no epochs given):
  the run trains until the validation mAP has not improved for PATIENCE epochs, within a time
  budget of TIME_BUDGET minutes of training + validation (--time; with the start-up and the final
  test the command takes about a minute more), and at most MAX_EPOCHS epochs. A fixed count of images seen cannot fit every data set
  (#21: on a harder set of 3,000 real photos the 3 derived epochs stopped at 82.2 test mAP,
  still rising). The learning rate warms up over 100 steps, then follows a cosine to 0 at the
  end of the budget (the steps that fit, read from the epochs' pace; trainer.py), where the run ends. Epochs given by the user win:
  then the one-cycle schedule over them and no early stop unless asked (--set train.patience=,
  --time). Without validation images, the fixed count below (one-cycle, nothing to stop on);
* epochs (the estimate that sizes the warm-up, EMA and augmentation when the run stops by the
  rule above): enough for TARGET_IMAGES training images seen (a few minutes with lite0 at 128 px on 2
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
* selection and decision thresholds: on the validation split (val.csv) when there is one; else,
  with at least 200 training images, 10% of them are held out: the best epoch, model vs EMA and
  each class's F1-optimal threshold are chosen on them (stored in best.pt; export and infer use
  them), and the test split is evaluated once, at the end.

Values given on the command line replace the rule's and are marked "set by the user"; what
depends on them (the epochs on a given size, the warm-up, EMA window and augmentation on the
epochs and batch) is derived again from the final values.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..model.presets import Preset

TARGET_IMAGES = 12_000
MIN_EPOCHS, MAX_EPOCHS = 3, 30
PATIENCE = 3               # validation evaluations (epochs) without a better mAP before the run stops
TIME_BUDGET = 7.0          # minutes of training + validation: 3,000 images of 128 px within 8 min in all
BATCH_SIZE = 32
UPSAMPLE = 1.25           # small images: see the module docstring
HOLDOUT, HOLDOUT_MIN_IMAGES = 0.1, 200   # per-class thresholds: share of the training images held out
SIZE_SAMPLE = 200          # images whose size is read (headers only) to find the median side


@dataclass
class Derived:
    """The recipe and, per setting, the value and why (printed and stored in recipe.yaml)."""
    recipe: Recipe
    reasons: list[tuple[str, str, str]]    # (setting, value, why)
    # the epochs of the images-seen rule: the run's when it trains a fixed count, else the estimate
    # that sizes the warm-up, EMA and augmentation of a run that stops by the validation mAP
    planned_epochs: int = 0

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


USER = "set by the user"   # the reason of a value given on the command line


def derive_for_dataset(base: Recipe, preset: Preset, image_size: int | None = None,
                       given: dict[str, Any] | None = None) -> Derived:
    """`derive_recipe` with the size and image sides of `base`'s training split, and its
    validation split (a folder's val.csv) when there is one."""
    from ..data import build_dataset
    from ..data.datasets import validation_split

    d = base.data
    train_set = build_dataset(d.name, d.root or None, d.train_split)
    side = median_image_side([path for path, _ in train_set.samples])
    val = validation_split(d.name, d.root or None, d.train_split, d.test_split)
    validation = f"{Path(d.root) / val}.csv" if val else None
    return derive_recipe(base, preset, len(train_set), side, image_size, given=given, validation=validation)


def derive_recipe(base: Recipe, preset: Preset, num_train: int, image_side: int | None,
                  image_size: int | None = None, given: dict[str, Any] | None = None,
                  validation: str | None = None) -> Derived:
    """`base` with model = the preset and train settings from the rule in the module docstring.

    `given`: values the user set ({"train.epochs": 5, ...}, the command line's): they are used as
    they are, marked "set by the user", and what depends on them (epochs on the size; warm-up,
    EMA window and augmentation on the epochs, batch and hold-out) is derived from the final
    values, so the block printed and written to recipe.yaml is what runs. `image_size` is the
    same as given["model.image_size"]. `validation`: the validation split's file, if any (then
    nothing is held out of the training images)."""
    given = dict(given or {})
    if image_size is not None:
        given["model.image_size"] = image_size
    reasons: list[tuple[str, str, str]] = []

    def choose(key: str, setting: str, rule_value: Any, why: str, shown: str | None = None) -> Any:
        """The user's value when given (marked so), else the rule's, with its reason."""
        if key in given:
            value = given[key]
            reasons.append((setting, _show(value), USER))
            return value
        reasons.append((setting, shown if shown is not None else _show(rule_value), why))
        return rule_value

    reasons.append(("model", preset.name, f"{preset.model['backbone']} ({preset.about}); default for own data"))
    side = None if image_side is None else max(64, 32 * math.ceil(image_side / 32))
    rule_size, size_why = preset.model["image_size"], "the preset's"
    if side is not None and side < rule_size:
        rule_size = min(rule_size, 32 * math.ceil(side * UPSAMPLE / 32))
        size_why = (f"training images are {image_side} px (median longer side); small images train better "
                    f"upsampled (x {UPSAMPLE}, measured), up to the preset's {preset.model['image_size']}")
    size = choose("model.image_size", "image_size", rule_size, size_why)
    compute = min(1.0, (side / size) ** 2) if side is not None else 1.0   # per image, against the own size
    holdout = 0.0 if validation else (HOLDOUT if num_train >= HOLDOUT_MIN_IMAGES else 0.0)
    holdout = given.get("train.threshold_holdout", holdout)
    fit_images = num_train - (max(1, round(holdout * num_train)) if holdout > 0 else 0)
    rule_epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_IMAGES * compute / max(num_train, 1))))
    seen = f"{TARGET_IMAGES:,} images seen" + (f" x {compute:.2f} (same time at {size} px)" if compute < 1 else "")
    # with validation images and no epochs given, the run stops by the validation mAP and the budget
    stopping = bool(validation or holdout) and "train.epochs" not in given
    if stopping:
        reasons.append(("epochs", f"<= {MAX_EPOCHS}",
                        f"until the stop rule below; ~{rule_epochs} expected ({seen} / {num_train:,} "
                        f"images) size the warm-up, EMA and augmentation"))
        epochs, plan_epochs = MAX_EPOCHS, rule_epochs
        patience = choose("train.patience", "patience", PATIENCE,
                          "stop when the validation mAP has not improved for this many epochs")
        budget = choose("train.time_budget", "time", TIME_BUDGET,
                        "minutes of training + validation (--time); stops when another epoch would not fit",
                        f"{TIME_BUDGET:g} min")
        if "train.time_budget" in given:
            reasons[-1] = ("time", f"{budget:g} min", USER)
    else:
        epochs = choose("train.epochs", "epochs", rule_epochs,
                        f"{seen} / {num_train:,} training images, within [{MIN_EPOCHS}, {MAX_EPOCHS}]")
        plan_epochs = epochs
        patience = given.get("train.patience", 0)
        budget = given.get("train.time_budget", 0.0)
        if "train.patience" in given:
            reasons.append(("patience", _show(patience), USER))
        if "train.time_budget" in given:
            reasons.append(("time", f"{budget:g} min", USER))
        if "train.epochs" not in given:
            reasons.append(("stop", "epochs", "no validation images to stop on: the epochs above, one-cycle"))
    d_model = given.get("model.d_model", preset.model["d_model"])
    lr = choose("train.lr", "lr", min(1e-3, max(1e-4, 1e-3 * 256 / d_model)),
                f"1e-3 x 256 / d_model {d_model}, within [1e-4, 1e-3]", f"{min(1e-3, max(1e-4, 1e-3 * 256 / d_model)):.2g}")
    batch = choose("train.batch_size", "batch_size", BATCH_SIZE, "the rule's (memory permitting: see train/memory.py)")
    # steps on the images left after the hold-out, as the trainer counts them
    steps = plan_epochs * steps_per_epoch(fit_images, batch, given.get("train.grad_accum", 1),
                                          given.get("train.max_steps_per_epoch", 0))
    pct_start = min(0.3, max(0.1, 100 / max(steps, 1)))
    if stopping:
        warmup = round(pct_start * steps)
        warmup = choose("train.warmup_steps", "warmup", warmup,
                        f"100 steps of the ~{steps} expected, within [0.1, 0.3] of them; then a cosine to 0 "
                        f"at the end of the time budget (schedule cosine)", f"{warmup} steps")
        if "train.pct_start" in given:
            pct_start = given["train.pct_start"]
            reasons.append(("pct_start", _show(pct_start), USER + " (one-cycle only; this run is cosine)"))
    else:
        pct_start = choose("train.pct_start", "pct_start", round(pct_start, 4),
                           f"100 warm-up steps of {steps} ({epochs} epochs x {steps // max(epochs, 1)} steps), "
                           f"within [0.1, 0.3]", f"{pct_start:.2f}")
    window = max(1.0, steps / 5)
    ema = min(0.9999, max(0.9, 1 - 1 / window))
    choose("train.ema_decay", "ema_decay", round(ema, 6),
           f"averages over ~{window:.0f} steps (a fifth of the run's {steps})", f"{ema:.4g}")
    if plan_epochs < 30:
        randaugment, cutout, why = "rand-m5-mstd0.5-inc1", False, f"RandAugment m5 below 30 epochs ({plan_epochs}; measured best)"
    else:
        randaugment, cutout, why = "rand-m9-mstd0.5-inc1", True, f"the paper's (RandAugment m9 + Cutout) from 30 epochs ({plan_epochs})"
    if "train.randaugment" in given or "train.cutout" in given:
        randaugment, cutout = given.get("train.randaugment", randaugment), given.get("train.cutout", cutout)
        reasons.append(("augmentation", _augmentation(randaugment, cutout), USER))
    else:
        reasons.append(("augmentation", _augmentation(randaugment, cutout), why))
    if validation:
        rule_why = f"{validation}: best epoch, model/EMA and per-class F1-optimal thresholds on it; test once"
    elif holdout:
        rule_why = (f"{round(holdout * num_train):,} of the {num_train:,} training images ({holdout:.0%}) held out: best "
                    f"epoch, model/EMA and per-class F1-optimal thresholds on them; test once")
    else:
        rule_why = (f"none: fewer than {HOLDOUT_MIN_IMAGES} training images to hold some out; the last "
                    f"epoch's weights and one global 0.5")
    shown = "val.csv" if validation else (f"{holdout:.0%} out" if holdout else "none")
    reasons.append(("selection", shown, USER if "train.threshold_holdout" in given else rule_why))
    values = {f"model.{k}": v for k, v in preset.model.items()}
    values.update({"model.image_size": size, "train.epochs": epochs, "train.lr": lr, "train.batch_size": batch,
                   "train.pct_start": pct_start, "train.ema_decay": round(ema, 6),
                   "train.randaugment": randaugment, "train.cutout": cutout, "train.threshold_holdout": holdout,
                   "train.patience": patience, "train.time_budget": float(budget)})
    if stopping:
        values.update({"train.schedule": "cosine", "train.warmup_steps": warmup})
    listed = {"model.image_size", "train.epochs", "train.lr", "train.batch_size", "train.pct_start",
              "train.ema_decay", "train.randaugment", "train.cutout", "train.threshold_holdout",
              "train.patience", "train.time_budget", "train.warmup_steps"}
    for key, value in given.items():   # the rest of what the user set, as set
        if key not in listed:
            reasons.append((key.split(".", 1)[1], _show(value), USER))
    values.update(given)
    return Derived(base.with_values(values), reasons, plan_epochs)


def steps_per_epoch(images: int, batch_size: int, grad_accum: int = 1, max_steps: int = 0) -> int:
    """Optimizer steps per epoch on one process, as the trainer counts them."""
    steps = math.ceil(math.ceil(max(images, 1) / batch_size) / grad_accum)
    return min(steps, max_steps) if max_steps > 0 else steps


def _augmentation(randaugment: str, cutout: bool) -> str:
    name = randaugment.split("-")[1] if randaugment else "none"
    return name + (" + cutout" if cutout else "")


def _show(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) and value < 0.01 else str(value)
