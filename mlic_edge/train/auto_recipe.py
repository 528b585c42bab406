"""A recipe that fits the data: training settings derived from the model preset and the dataset.

Used when `mlic-edge train` gets a model preset or own data (`--data folder`) and no recipe file.
The shipped paper recipes are tuned for 80 epochs on 8 GPUs; a user with 3,000 images and a CPU
needs a short schedule that still converges. The rule, every step of which is printed (the data
each choice was decided on, and its check on held-out training images: docs/results.md,
"Decisions and the data they were made on"):

* image size: the preset's; smaller images are upsampled by UPSAMPLE (their median longer side,
  to a multiple of 32, x UPSAMPLE, at most the preset's size): ImageNet backbones see objects
  nearer the scale they were pretrained at and the feature grid grows, while the full preset
  size would leave too few epochs in the same time;
* when to stop (with validation images and no epochs given): when the validation mAP has not
  improved for PATIENCE epochs, within TIME_BUDGET minutes of training + validation, at most
  MAX_EPOCHS epochs; a fixed count of images seen cannot fit every data set. The learning rate
  warms up, then follows a cosine to 0 at the end of the budget (trainer.py), where the run ends.
  Epochs given by the user win (one-cycle over them, no early stop unless asked); without
  validation images, the fixed count below (one-cycle, nothing to stop on);
* epochs (the estimate that sizes warm-up, EMA and augmentation when the run stops by the rule
  above): TARGET_IMAGES training images seen at the images' own size ((side / size)^2 fewer on a
  larger input: the same time), within [MIN_EPOCHS, MAX_EPOCHS];
* learning rate: 1e-3 for a 256-wide head, scaled by 256 / d_model (wider Transformers need
  smaller steps), within [1e-4, 1e-3];
* warm-up: 100 optimizer steps, as a share of the run within [0.1, 0.3];
* EMA decay: an averaging window of a fifth of the run's steps, within [0.9, 0.9999];
* augmentation: RandAugment m5 below 30 epochs (short runs underfit with more), the paper's m9 +
  Cutout from 30;
* selection and thresholds: on the validation split (val.csv) when there is one, else on HOLDOUT
  of the training images when there are HOLDOUT_MIN_IMAGES; the test split is evaluated once.

Values given on the command line replace the rule's and are marked "set by the user"; what
depends on them is derived again from the final values, so what is printed is what runs.
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
# the settings the rule decides (a user's value for one of them is listed where it is decided)
DECIDED = {"model.image_size", "train.epochs", "train.lr", "train.batch_size", "train.pct_start",
           "train.ema_decay", "train.randaugment", "train.cutout", "train.threshold_holdout",
           "train.patience", "train.time_budget", "train.warmup_steps"}


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


class Decisions:
    """The rule's decisions, one method each, in the order they are printed. `given`: what the
    user set (used as set, marked so); each decision adds its (setting, value, why) to `reasons`."""

    def __init__(self, preset: Preset, num_train: int, given: dict[str, Any], validation: str | None):
        self.preset, self.num_train, self.given, self.validation = preset, num_train, given, validation
        self.reasons: list[tuple[str, str, str]] = []
        self.values: dict[str, Any] = {f"model.{k}": v for k, v in preset.model.items()}

    def choose(self, key: str, setting: str, rule_value: Any, why: str, shown: str | None = None) -> Any:
        """The user's value when given (marked so), else the rule's, with its reason; kept in `values`."""
        if key in self.given:
            value = self.given[key]
            self.reasons.append((setting, _show(value), USER))
        else:
            value = rule_value
            self.reasons.append((setting, shown if shown is not None else _show(rule_value), why))
        self.values[key] = value
        return value

    def user_set(self, key: str, setting: str, shown: str | None = None) -> None:
        """A value the rule does not choose here, listed when the user set it."""
        if key in self.given:
            self.reasons.append((setting, shown if shown is not None else _show(self.given[key]), USER))

    def image_size(self, image_side: int | None) -> tuple[int, int | None]:
        """(input size, the images' side rounded up to 32): small images upsampled, up to the preset's."""
        preset_size = self.preset.model["image_size"]
        side = None if image_side is None else max(64, 32 * math.ceil(image_side / 32))
        rule_size, why = preset_size, "the preset's"
        if side is not None and side < rule_size:
            rule_size = min(rule_size, 32 * math.ceil(side * UPSAMPLE / 32))
            why = (f"training images are {image_side} px (median longer side); small images train better "
                   f"upsampled (x {UPSAMPLE}, measured), up to the preset's {preset_size}")
        return self.choose("model.image_size", "image_size", rule_size, why), side

    def holdout(self) -> float:
        """Share of the training images held out to select on: none beside a validation split."""
        rule = 0.0 if self.validation else (HOLDOUT if self.num_train >= HOLDOUT_MIN_IMAGES else 0.0)
        self.values["train.threshold_holdout"] = holdout = self.given.get("train.threshold_holdout", rule)
        return holdout

    def rule_epochs(self, compute: float) -> tuple[int, str]:
        """(the images-seen epochs, how they were counted)."""
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, round(TARGET_IMAGES * compute / max(self.num_train, 1))))
        seen = f"{TARGET_IMAGES:,} images seen" + (f" x {compute:.2f} (same time at "
                                                   f"{self.values['model.image_size']} px)" if compute < 1 else "")
        return epochs, seen

    def stop_by_validation(self, rule_epochs: int, seen: str) -> int:
        """Up to MAX_EPOCHS, stopped by patience or the time budget; the planned epochs returned."""
        self.reasons.append(("epochs", f"<= {MAX_EPOCHS}",
                             f"until the stop rule below; ~{rule_epochs} expected ({seen} / {self.num_train:,} "
                             f"images) size the warm-up, EMA and augmentation"))
        self.values["train.epochs"] = MAX_EPOCHS
        self.choose("train.patience", "patience", PATIENCE,
                    "stop when the validation mAP has not improved for this many epochs")
        budget = self.choose("train.time_budget", "time", TIME_BUDGET,
                             "minutes of training + validation (--time); stops when another epoch would not fit",
                             f"{TIME_BUDGET:g} min")
        if "train.time_budget" in self.given:
            self.reasons[-1] = ("time", f"{budget:g} min", USER)
        self.values["train.schedule"] = "cosine"
        return rule_epochs

    def fixed_epochs(self, rule_epochs: int, seen: str) -> int:
        """The epochs given, or the images-seen count; patience and budget only when set."""
        epochs = self.choose("train.epochs", "epochs", rule_epochs,
                             f"{seen} / {self.num_train:,} training images, within [{MIN_EPOCHS}, {MAX_EPOCHS}]")
        self.values["train.patience"] = self.given.get("train.patience", 0)
        self.values["train.time_budget"] = self.given.get("train.time_budget", 0.0)
        self.user_set("train.patience", "patience")
        self.user_set("train.time_budget", "time", f"{self.values['train.time_budget']:g} min")
        if "train.epochs" not in self.given:
            self.reasons.append(("stop", "epochs", "no validation images to stop on: the epochs above, one-cycle"))
        return epochs

    def lr_and_batch(self) -> int:
        """The learning rate by the head's width; the batch (memory permitting)."""
        d_model = self.given.get("model.d_model", self.preset.model["d_model"])
        lr = min(1e-3, max(1e-4, 1e-3 * 256 / d_model))
        self.choose("train.lr", "lr", lr, f"1e-3 x 256 / d_model {d_model}, within [1e-4, 1e-3]", f"{lr:.2g}")
        return self.choose("train.batch_size", "batch_size", BATCH_SIZE,
                           "the rule's (memory permitting: see train/memory.py)")

    def warmup(self, steps: int, epochs: int, stopping: bool) -> None:
        """100 warm-up steps within [0.1, 0.3] of the run: the cosine's warmup_steps, or one-cycle's pct_start."""
        pct_start = min(0.3, max(0.1, 100 / max(steps, 1)))
        if stopping:
            warmup = round(pct_start * steps)
            self.choose("train.warmup_steps", "warmup", warmup,
                        f"100 steps of the ~{steps} expected, within [0.1, 0.3] of them; then a cosine to 0 "
                        f"at the end of the time budget (schedule cosine)", f"{warmup} steps")
            self.values["train.pct_start"] = self.given.get("train.pct_start", pct_start)
            if "train.pct_start" in self.given:
                self.reasons.append(("pct_start", _show(self.given["train.pct_start"]),
                                     USER + " (one-cycle only; this run is cosine)"))
            return
        self.choose("train.pct_start", "pct_start", round(pct_start, 4),
                    f"100 warm-up steps of {steps} ({epochs} epochs x {steps // max(epochs, 1)} steps), "
                    f"within [0.1, 0.3]", f"{pct_start:.2f}")

    def ema(self, steps: int) -> None:
        window = max(1.0, steps / 5)
        ema = min(0.9999, max(0.9, 1 - 1 / window))
        self.choose("train.ema_decay", "ema_decay", round(ema, 6),
                    f"averages over ~{window:.0f} steps (a fifth of the run's {steps})", f"{ema:.4g}")

    def augmentation(self, plan_epochs: int) -> None:
        if plan_epochs < 30:
            randaugment, cutout, why = "rand-m5-mstd0.5-inc1", False, f"RandAugment m5 below 30 epochs ({plan_epochs}; measured best)"
        else:
            randaugment, cutout, why = "rand-m9-mstd0.5-inc1", True, f"the paper's (RandAugment m9 + Cutout) from 30 epochs ({plan_epochs})"
        if "train.randaugment" in self.given or "train.cutout" in self.given:
            randaugment = self.given.get("train.randaugment", randaugment)
            cutout, why = self.given.get("train.cutout", cutout), USER
        self.values.update({"train.randaugment": randaugment, "train.cutout": cutout})
        self.reasons.append(("augmentation", _augmentation(randaugment, cutout), why))

    def selection(self, holdout: float) -> None:
        n = self.num_train
        if self.validation:
            why = f"{self.validation}: best epoch, model/EMA and per-class F1-optimal thresholds on it; test once"
        elif holdout:
            why = (f"{round(holdout * n):,} of the {n:,} training images ({holdout:.0%}) held out: best "
                   f"epoch, model/EMA and per-class F1-optimal thresholds on them; test once")
        else:
            why = (f"none: fewer than {HOLDOUT_MIN_IMAGES} training images to hold some out; the last "
                   f"epoch's weights and one global 0.5")
        shown = "val.csv" if self.validation else (f"{holdout:.0%} out" if holdout else "none")
        self.reasons.append(("selection", shown, USER if "train.threshold_holdout" in self.given else why))

    def rest_of_given(self) -> None:
        """What else the user set, listed as set."""
        for key, value in self.given.items():
            if key not in DECIDED:
                self.reasons.append((key.split(".", 1)[1], _show(value), USER))


def derive_recipe(base: Recipe, preset: Preset, num_train: int, image_side: int | None,
                  image_size: int | None = None, given: dict[str, Any] | None = None,
                  validation: str | None = None) -> Derived:
    """`base` with model = the preset and train settings from the rule in the module docstring.

    `given`: values the user set ({"train.epochs": 5, ...}, the command line's): used as they are,
    marked "set by the user"; what depends on them is derived from the final values.
    `image_size` is the same as given["model.image_size"]. `validation`: the validation split's
    file, if any (then nothing is held out of the training images)."""
    given = dict(given or {})
    if image_size is not None:
        given["model.image_size"] = image_size
    rule = Decisions(preset, num_train, given, validation)
    rule.reasons.append(("model", preset.name, f"{preset.model['backbone']} ({preset.about}); default for own data"))
    size, side = rule.image_size(image_side)
    compute = min(1.0, (side / size) ** 2) if side is not None else 1.0   # per image, against the own size
    holdout = rule.holdout()
    fit_images = num_train - (max(1, round(holdout * num_train)) if holdout > 0 else 0)
    epochs_by_images, seen = rule.rule_epochs(compute)
    stopping = bool(validation or holdout) and "train.epochs" not in given
    plan_epochs = (rule.stop_by_validation if stopping else rule.fixed_epochs)(epochs_by_images, seen)
    batch = rule.lr_and_batch()
    # steps on the images left after the hold-out, as the trainer counts them
    steps = plan_epochs * steps_per_epoch(fit_images, batch, given.get("train.grad_accum", 1),
                                          given.get("train.max_steps_per_epoch", 0))
    rule.warmup(steps, rule.values["train.epochs"], stopping)
    rule.ema(steps)
    rule.augmentation(plan_epochs)
    rule.selection(holdout)
    rule.rest_of_given()
    rule.values["train.time_budget"] = float(rule.values["train.time_budget"])
    return Derived(base.with_values({**rule.values, **given}), rule.reasons, plan_epochs)


def steps_per_epoch(images: int, batch_size: int, grad_accum: int = 1, max_steps: int = 0) -> int:
    """Optimizer steps per epoch on one process, as the trainer counts them."""
    steps = math.ceil(math.ceil(max(images, 1) / batch_size) / grad_accum)
    return min(steps, max_steps) if max_steps > 0 else steps


def _augmentation(randaugment: str, cutout: bool) -> str:
    name = randaugment.split("-")[1] if randaugment else "none"
    return name + (" + cutout" if cutout else "")


def _show(value: Any) -> str:
    return f"{value:.2g}" if isinstance(value, float) and value < 0.01 else str(value)
