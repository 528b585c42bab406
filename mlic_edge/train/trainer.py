"""The training loop: AdamW + one-cycle, AMP, EMA, DDP, exact resume, atomic checkpoints.

Run folder layout (rank 0 writes, atomically):
    recipe.yaml      the full recipe of the run
    last.pt          everything needed to resume (weights, optimizer, scheduler, EMA, position, RNG)
    best.pt          the selected weights (epoch, and model or EMA, by validation mAP), for deployment
    metrics.jsonl    one line per epoch (validation figures), then one test line (split "test")
    curves.png       loss, learning rate and validation mAP per epoch

Selection: each epoch the model and its EMA are scored on the validation split (a folder's
val.csv) or, without one, on a seeded hold-out of the training images (train.threshold_holdout);
the best epoch's better one is best.pt, and its per-class thresholds are fitted on the same images.
The test split is evaluated once, at the end, on best.pt. A figure chosen on the images it is
reported on is optimistic (a best-of-N), and a user's own test set would leak into the model they
deploy. `train.select_on: test` keeps the paper's protocol for its shipped recipes
(mlic_edge/configs/); the run then says that its test figure is a selected one.

Stopping: after train.epochs, or earlier with train.patience (that many epochs without a better
validation mAP) or train.time_budget (minutes of training + validation). With the cosine schedule
the budget sets the cosine's horizon in steps (whole epochs, then a shorter last one, at the
latest epoch's pace; read after epochs 1 and 2) and the run ends where the cosine does; with
one-cycle it stops when another epoch would not fit. An epoch during which the budget runs out is
cut short at a step boundary and validated as the last. The reason is
printed, written to the last epoch's row and the test row of metrics.jsonl, and kept in last.pt
with the time used, so --resume continues under the same rule and a stopped run trains no further.
"""
from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import Recipe
from ..core.files import atomic_write_bytes
from ..model import build_model
from ..core.errors import TrainingError, TrainingInterrupted
from .distributed import DistInfo, barrier, cleanup, init_distributed, resolve_device
from .evaluate import autocast_context, predict, score
from .loader import IndexedSamples, ResumableSampler, collate_indexed

log = logging.getLogger(__name__)


def resolve_amp(spec: str, device: torch.device) -> torch.dtype | None:
    if spec == "off" or device.type != "cuda":
        return None  # CPU autocast is slower than fp32 on most CPUs and hurts accuracy
    if spec == "fp16":
        return torch.float16
    if spec == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def preflight(recipe: Recipe) -> torch.device:
    """What can be checked before any data is read or anything built or written: the device
    (torch sees the GPU asked for) and the backbone name (timm knows it). Returns the device."""
    from ..model import check_backbone_name

    device = resolve_device(recipe.train.device, "train.device")
    check_backbone_name(recipe.model.backbone)
    return device


def build_datasets(recipe: Recipe):
    """Train, validation (None without one) and test (None for a folder without its test csv)
    datasets, without transforms yet (they depend on the backbone)."""
    from ..data import build_dataset
    from ..data.datasets import has_test_split, validation_split

    d = recipe.data
    root = d.root or None
    val_split = validation_split(d.name, root, d.train_split, d.test_split)
    return (build_dataset(d.name, root, d.train_split),
            build_dataset(d.name, root, val_split) if val_split else None,
            build_dataset(d.name, root, d.test_split) if has_test_split(d.name, root, d.test_split) else None)


def build_splits(recipe: Recipe, check_overlaps: bool = False):
    """(train, validation, test, hold-out): `build_datasets`, checked to list the same classes, and
    without a validation split a seeded hold-out of the training images (train.threshold_holdout)
    to select and fit thresholds on (None when that is 0). `check_overlaps`: log the images the
    whole training split shares with the test or validation split, before the hold-out is taken
    from it (a test image in the hold-out would inflate the selection and thresholds too)."""
    train_set, val_set, test_set = build_datasets(recipe)
    for name, split in (("validation", val_set), ("test", test_set)):
        if split is not None and list(split.classes) != list(train_set.classes):
            raise TrainingError(f"{recipe.data.name}: train and {name} splits list different classes "
                                f"(a folder dataset with other split names needs a classes.txt)")
    t = recipe.train
    if t.select_on == "test" and test_set is None:
        raise TrainingError(f"train.select_on test: {recipe.data.name} has no {recipe.data.test_split} split "
                            f"to select on (use select_on val)")
    if check_overlaps:
        warn_split_overlaps(train_set, val_set, test_set)
    holdout_set = (train_set.split_off(t.threshold_holdout, t.seed)
                   if val_set is None and t.threshold_holdout > 0 else None)
    return train_set, val_set, test_set, holdout_set


def set_transforms(train_set, eval_sets, preprocess: dict, recipe: Recipe) -> None:
    from ..data import build_transform

    t = recipe.train
    train_set.transform = build_transform(preprocess, train=True, cutout=t.cutout,
                                          randaugment=t.randaugment)
    for dataset in eval_sets:
        if dataset is not None:
            dataset.transform = build_transform(preprocess, train=False)


def warn_split_overlaps(train_set, val_set, test_set) -> None:
    """Images of the training split that are also in the test or validation split (logged)."""
    from ..data.split_check import split_warnings

    others = [(n, d) for n, d in (("test", test_set), ("validation", val_set)) if d is not None]
    for i, (name, other) in enumerate(others):
        for warning in split_warnings(train_set, other, name, training=i == 0):
            log.warning(warning)


def load_resume_state(out_dir: Path) -> dict[str, Any]:
    """last.pt of the run in `out_dir`, with the training state a resume needs."""
    state = load_checkpoint(out_dir / "last.pt")
    if "train_state" not in state:
        raise TrainingError(f"{out_dir / 'last.pt'}: holds no training state to resume")
    return state


def build_train_model(recipe: Recipe, device: torch.device, resumed: bool) -> nn.Module:
    """The model on `device` (NHWC with train.channels_last); a resumed run's weights come from
    last.pt, so no pretrained weights are fetched for it."""
    model = build_model(recipe.model if not resumed else recipe.model.replace(pretrained="none")).to(device)
    return model.to(memory_format=torch.channels_last) if recipe.train.channels_last else model


def build_ema(model: nn.Module, decay: float):
    """timm's EMA of the weights (None with train.ema_decay 0)."""
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3
    return ModelEmaV3(model, decay=decay)


def build_network(model: nn.Module, dist: DistInfo, device: torch.device, compile_model: bool) -> nn.Module:
    """What the training step calls: the model, DDP-wrapped under torchrun, compiled when asked (CUDA)."""
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_model and device.type == "cuda":
        net = torch.compile(net)
    return net


def build_train_loader(train_set, recipe: Recipe, dist: DistInfo, device: torch.device):
    """(sampler, samples, loader) of the training split: a resumable sampler (a resume skips the
    batches done) over per-sample seeded augmentation."""
    t = recipe.train
    sampler = ResumableSampler(len(train_set), t.seed, dist.rank, dist.world_size)
    samples = IndexedSamples(train_set, seed=t.seed)
    loader = DataLoader(samples, batch_size=t.batch_size, sampler=sampler, num_workers=recipe.data.workers,
                        collate_fn=collate_indexed, pin_memory=device.type == "cuda", drop_last=False,
                        # Own generator: creating an iterator must not draw from the global RNG
                        # (dropout), or a resumed run would diverge.
                        generator=torch.Generator().manual_seed(t.seed))
    return sampler, samples, loader


def parameter_groups(model: nn.Module, t) -> tuple[list[dict[str, Any]], list[float] | float]:
    """AdamW's parameter groups and their one-cycle maxima: one group at lr, or with
    backbone_lr_scale != 1 the backbone at lr x scale and the rest at lr (two groups only then,
    so runs without it keep the optimizer state layout of the checkpoints they resume from)."""
    if t.backbone_lr_scale == 1.0:
        return [{"params": list(model.parameters())}], t.lr
    backbone = list(model.backbone.parameters())
    ids = {id(p) for p in backbone}
    head = [p for p in model.parameters() if id(p) not in ids]
    return ([{"params": backbone, "lr": t.lr * t.backbone_lr_scale}, {"params": head, "lr": t.lr}],
            [t.lr * t.backbone_lr_scale, t.lr])


def build_optimizer(model: nn.Module, t, device: torch.device):
    """(AdamW, the groups' peak learning rates)."""
    groups, max_lr = parameter_groups(model, t)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                                  fused=device.type == "cuda")  # one kernel per step
    return optimizer, max_lr


def build_scheduler(optimizer, t, steps_per_epoch: int, max_lr, cosine_factor):
    """train.schedule: cosine (`cosine_factor(step)`: the share of the groups' peaks, whose horizon
    the trainer may move with a time budget) or the paper's one-cycle over train.epochs."""
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_factor)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=t.epochs * steps_per_epoch,
        pct_start=t.pct_start, cycle_momentum=t.cycle_momentum)


def write_recipe(out_dir: Path, recipe: Recipe, notes: str) -> None:
    """recipe.yaml of a new run: `notes` (how the recipe was derived) as comment lines on top."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {line}\n" for line in notes.splitlines())
    atomic_write_bytes(out_dir / "recipe.yaml", (header + recipe.to_yaml()).encode())


class EpochTally:
    """An epoch's running loss, images and skipped images, and its pace."""

    def __init__(self):
        self.loss_sum, self.images, self.skipped, self.started = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss * images
        self.images += images

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    def rate(self, world_size: int) -> float:
        """Images per second over all processes."""
        return self.images * world_size / max(time.perf_counter() - self.started, 1e-9)


def rank_key(mAP: float) -> float:
    """mAP as a selection key: NaN (no class with a positive among the images) ranks last."""
    return -math.inf if math.isnan(mAP) else mAP


class Trainer:
    """One run: built from the recipe by the `build_*` steps above, trained by `fit`."""

    def __init__(self, recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, notes: str = ""):
        self.out_dir, self.show_progress = Path(out_dir), show_progress
        state = load_resume_state(self.out_dir) if resume else None
        if state is not None:
            recipe = Recipe.from_dict(state["recipe"])  # the run continues as it was started
        self.device = preflight(recipe)
        self.dist: DistInfo = init_distributed(self.device)
        self.train_set, self.val_set, self.test_set, self.holdout_set = build_splits(
            recipe, check_overlaps=state is None and self.dist.is_main)
        self.classes = list(self.train_set.classes)
        self.thresholds = [recipe.train.threshold] * len(self.classes)
        # The data defines the label set; a recipe's num_classes only documents it.
        self.recipe = recipe = recipe.with_values({"model.num_classes": len(self.classes)})
        torch.manual_seed(recipe.train.seed)  # same initial weights on every rank
        self.amp_dtype = resolve_amp(recipe.train.amp, self.device)
        self.model = build_train_model(recipe, self.device, resumed=state is not None)
        self.preprocess = self.model.data_config()
        set_transforms(self.train_set, (self.val_set, self.holdout_set, self.test_set), self.preprocess, recipe)
        if state is None:
            self.recipe = self._fit_in_memory(recipe)
        if self.dist.is_main:
            log.info(self._describe_protocol())
        self._build_optimisation(self.recipe.train)
        self._start_position()
        if state is not None:
            self._restore(state)
        elif self.dist.is_main:
            write_recipe(self.out_dir, self.recipe, notes)
        self._snapshot_rng()

    def _build_optimisation(self, t) -> None:
        """EMA, the network the step calls, the loader, loss, optimizer, schedule and AMP scaler."""
        from ..losses import build_loss
        from .auto_recipe import steps_per_epoch

        self.ema = build_ema(self.model, t.ema_decay)
        self.net: nn.Module = build_network(self.model, self.dist, self.device, t.compile)
        self.sampler, self.train_samples, self.loader = build_train_loader(self.train_set, self.recipe,
                                                                           self.dist, self.device)
        self.steps_per_epoch = steps_per_epoch(len(self.sampler), t.batch_size, t.grad_accum, t.max_steps_per_epoch)
        self.criterion = build_loss(t.loss, **t.loss_args)
        self.optimizer, max_lr = build_optimizer(self.model, t, self.device)
        # cosine: its horizon in optimizer steps (train.epochs' steps; with a time budget, the steps
        # that fit in it: estimated after the first epoch, fixed after the second, kept in last.pt)
        self.horizon_steps = t.epochs * self.steps_per_epoch
        self.scheduler = build_scheduler(self.optimizer, t, self.steps_per_epoch, max_lr, self._cosine_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _start_position(self) -> None:
        """A new run's position, history and clocks (a resume then restores them from last.pt)."""
        # `epoch` is the epoch in progress; `batches_done` counts its micro-batches up to the last
        # optimizer step (a resume starts right after them).
        self.epoch, self.batches_done, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": -1.0}
        self.skipped_total = 0
        # why the run stopped ({"reason": patience | time budget | epochs, "detail": ...}), once it has;
        # seconds of training + validation so far (over resumes), for the time budget, and at
        # each epoch's end (what the next epoch will take is read from the latest one)
        self.stopped: dict[str, str] | None = None
        self._elapsed_before, self._clock = 0.0, time.perf_counter()
        self.epoch_ends: list[float] = []
        self.validation_s = 0.0   # the latest epoch's validation (a shortened last epoch still has one)

    def _cosine_factor(self, step: int) -> float:
        """train.schedule cosine: the learning rate's share of its peak after `step` optimizer steps."""
        warm = self.recipe.train.warmup_steps
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / warm          # from lr/25, as one-cycle starts
        progress = min(1.0, (step - warm) / max(1, self.horizon_steps - warm))
        return 0.5 * (1 + math.cos(math.pi * progress))

    def _elapsed(self) -> float:
        """Seconds of training + validation in this run, over its resumes."""
        return self._elapsed_before + time.perf_counter() - self._clock

    def _fit_in_memory(self, recipe: Recipe) -> Recipe:
        """Measure what a step needs before the first one (train/memory.py): a smaller micro-batch
        with gradient accumulation when the batch does not fit, a one-line error when one image
        does not."""
        from .memory import gib, plan_memory

        t, size = recipe.train, recipe.model.image_size
        plan = plan_memory(self.model, size, t.batch_size, t.grad_accum, self.device,
                           ema=t.ema_decay > 0, channels_last=t.channels_last)
        if plan.batch_size == 0:
            smaller = "--preset lite0-224" if recipe.model.backbone != "tf_efficientnet_lite0" else f"--image-size {size // 2}"
            raise TrainingError(
                f"{recipe.model.backbone} @{size}px needs ~{gib(plan.needed(1))} to train on even one image, "
                f"{gib(plan.available)} available on {self.device}: use a smaller model or input ({smaller})")
        if (plan.batch_size, plan.grad_accum) != (t.batch_size, t.grad_accum):
            effective, asked = plan.batch_size * plan.grad_accum, t.batch_size * t.grad_accum
            log.warning("batch %d needs ~%s, %s available on %s: training with batch %d x %d accumulation "
                        "steps (effective batch %d%s)", t.batch_size, gib(plan.needed(t.batch_size)),
                        gib(plan.available), self.device, plan.batch_size, plan.grad_accum, effective,
                        ", as the recipe asks" if effective == asked else f"; the recipe's is {asked}")
            recipe = recipe.with_values({"train.batch_size": plan.batch_size, "train.grad_accum": plan.grad_accum})
        return recipe

    # ------------------------------------------------------------------------------- state
    def _train_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "batches_done": self.batches_done, "global_step": self.global_step,
            "history": self.history, "best": self.best, "skipped_total": self.skipped_total,
            "stopped": self.stopped, "elapsed_s": self._elapsed(), "epoch_ends": self.epoch_ends,
            "horizon_steps": self.horizon_steps, "validation_s": self.validation_s,
            # Augmentation draws from per-sample seeds (loader.py); only dropout uses these,
            # as they were right after the last optimizer step (an interrupted forward pass may
            # have drawn from them since).
            "rng_cpu": self._rng_after_step[0],
            "rng_cuda": self._rng_after_step[1],
        }

    def _snapshot_rng(self) -> None:
        self._rng_after_step = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device)
                                if self.device.type == "cuda" else None)

    def _restore(self, state: dict[str, Any]) -> None:
        ts = state["train_state"]
        self.model.load_state_dict(state["model"])
        if self.ema is not None and ts["ema"] is not None:
            self.ema.module.load_state_dict(ts["ema"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        self.scaler.load_state_dict(ts["scaler"])
        self.thresholds = list(state.get("thresholds") or self.thresholds)
        self.epoch, self.batches_done = ts["epoch"], ts["batches_done"]
        self.global_step, self.history, self.best = ts["global_step"], ts["history"], ts["best"]
        self.skipped_total = ts.get("skipped_total", 0)
        self.stopped, self._elapsed_before = ts.get("stopped"), ts.get("elapsed_s", 0.0)
        self.horizon_steps = ts.get("horizon_steps", self.horizon_steps)
        self.epoch_ends = list(ts.get("epoch_ends", []))
        self.validation_s = ts.get("validation_s", 0.0)
        torch.set_rng_state(ts["rng_cpu"])
        if self.device.type == "cuda" and ts["rng_cuda"] is not None:
            torch.cuda.set_rng_state(ts["rng_cuda"], self.device)

    def _common(self) -> dict[str, Any]:
        return {"config": self.recipe.model.to_dict(), "classes": self.classes,
                "preprocess": self.preprocess, "thresholds": [float(t) for t in self.thresholds],
                "recipe": self.recipe.to_dict()}

    def save_last(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out_dir / "last.pt", {
                **self._common(), "model": self.model.state_dict(),
                "metrics": self.history[-1] if self.history else {},
                "train_state": self._train_state()})

    # ------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        """Train until the stop rule (train.epochs; train.patience, train.time_budget when set),
        then test best.pt once (returns that result). A resumed run that had stopped trains no
        further. Ctrl-C (SIGINT) finishes the optimizer step in flight, saves
        last.pt and raises TrainingInterrupted; a second Ctrl-C aborts at once, leaving the last.pt of
        the previous save intact (it is only ever replaced atomically)."""
        t = self.recipe.train
        progress = self._progress()
        previous_handler = self._install_sigint_handler()
        self._clock = time.perf_counter()
        if self.stopped is not None and self.dist.is_main:
            print(f"this run had stopped ({self.stopped['reason']}: {self.stopped['detail']}); not training further")
        try:
            with progress or nullcontext():
                while self.stopped is None and self.epoch < t.epochs:
                    train_stats = self._train_epoch(progress)
                    if train_stats is None:  # stop requested mid-epoch, at a step boundary
                        self.save_last()
                        raise TrainingInterrupted(
                            f"interrupted: state saved to {self.out_dir / 'last.pt'} (epoch "
                            f"{self.epoch + 1}, step {self.global_step}); continue with --resume",
                            self.out_dir, self.epoch + 1, self.global_step)
                    self._end_epoch(train_stats, progress)
                result = self._final_test(progress)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"aborted; {self.out_dir / 'last.pt'} holds the last saved state "
                                      f"(continue with --resume)", self.out_dir, self.epoch + 1,
                                      self.global_step) from None
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            cleanup(self.dist)
        return result

    def _install_sigint_handler(self):
        self._stop_requested = False
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum, frame):
            if self._stop_requested:  # second Ctrl-C: abort now
                raise KeyboardInterrupt
            self._stop_requested = True
            log.warning("Ctrl-C: stopping after this step and saving last.pt (Ctrl-C again to abort)")

        return signal.signal(signal.SIGINT, request_stop)

    def _should_stop(self) -> bool:
        """Every rank must stop at the same step, so DDP ranks agree on the flag."""
        stop = self._stop_requested
        if self.dist.enabled:
            flag = torch.tensor([float(stop)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _progress(self):
        if not (self.show_progress and self.dist.is_main):
            return None
        from ..core.progress import progress_bar
        return progress_bar()

    def _train_epoch(self, progress) -> dict[str, float] | None:
        """One epoch (or what is left of it after a resume) of optimizer steps; its loss and pace,
        or None when Ctrl-C asked to stop (at a step boundary, before the epoch's end)."""
        t = self.recipe.train
        step_in_epoch, task = self._start_epoch(progress)
        tally = EpochTally()
        micro, batches_left = 0, len(self.loader)
        for batch_i, (_, images, targets, n_skipped) in enumerate(self.loader):
            if step_in_epoch >= self.steps_per_epoch:
                break
            tally.skipped += n_skipped
            last_of_step = (micro + 1 == t.grad_accum) or (batch_i + 1 == batches_left)
            if images is not None:
                tally.add(self._forward_backward(images, targets, last_of_step), images.shape[0])
            micro += 1
            if not last_of_step:
                continue
            self._optimizer_step()
            step_in_epoch, self.batches_done, micro = step_in_epoch + 1, self.batches_done + micro, 0
            if task is not None:
                progress.update(task, advance=1, info=f"loss {tally.loss:.4f} lr {self.scheduler.get_last_lr()[0]:.2e} "
                                                      f"{tally.rate(self.dist.world_size):.1f} img/s")
            if step_in_epoch < self.steps_per_epoch and self._should_stop():
                if task is not None:
                    progress.remove_task(task)
                return None
            if step_in_epoch < self.steps_per_epoch and self._cut_short(step_in_epoch):
                break
        if task is not None:
            progress.remove_task(task)
        return self._epoch_stats(tally)

    def _start_epoch(self, progress) -> tuple[int, Any]:
        """Position the sampler and augmentation at the epoch (after a resume: its batches done);
        (optimizer steps already done in it, its progress task)."""
        t = self.recipe.train
        self.net.train()
        self.sampler.set_epoch(self.epoch, skip_samples=self.batches_done * t.batch_size)
        self.train_samples.set_epoch(self.epoch)
        steps_done = math.ceil(self.batches_done / t.grad_accum)
        task = None
        if progress is not None:
            task = progress.add_task(f"epoch {self.epoch + 1}/{t.epochs}", total=self.steps_per_epoch,
                                     completed=steps_done, info="")
        return steps_done, task

    def _forward_backward(self, images: torch.Tensor, targets: torch.Tensor, last_of_step: bool) -> float:
        """One micro-batch's loss, its gradients accumulated (DDP syncs them on a step's last one)."""
        t = self.recipe.train
        images = images.to(self.device, non_blocking=True)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(self.device, non_blocking=True)
        sync = self.net.no_sync() if (self.dist.enabled and not last_of_step) else nullcontext()
        with sync, autocast_context(self.device, self.amp_dtype):
            logits = self.net(images)
            loss = self.criterion(logits.float(), targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss became {loss_value} at epoch {self.epoch + 1}, step {self.global_step + 1}; "
                f"stopped. The last good checkpoint is {self.out_dir / 'last.pt'} "
                f"(lower train.lr or try amp=off)")
        self.scaler.scale(loss / t.grad_accum).backward()
        return loss_value

    def _optimizer_step(self) -> None:
        """The step, the schedule, the EMA, and the RNG state a resume restarts from."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        self.global_step += 1
        self._snapshot_rng()

    def _cut_short(self, step_in_epoch: int) -> bool:
        """Whether the epoch ends early: the cosine sized to the time budget ended, or the budget is
        spent. The shorter epoch is validated as the last; the stop rule then says why."""
        if self._cosine_ended():
            log.info("the learning rate's cosine, sized to the time budget, ended in epoch %d: "
                     "ending it after step %d of %d", self.epoch + 1, step_in_epoch, self.steps_per_epoch)
            return True
        if self._over_budget():
            log.warning("time budget (%g min) spent in epoch %d: ending it after step %d of %d",
                        self.recipe.train.time_budget, self.epoch + 1, step_in_epoch, self.steps_per_epoch)
            return True
        return False

    def _epoch_stats(self, tally: "EpochTally") -> dict[str, float]:
        self.skipped_total += tally.skipped
        if tally.skipped:
            log.warning("epoch %d: skipped %d unreadable image(s) (see warnings above)", self.epoch + 1, tally.skipped)
        return {"train_loss": tally.loss, "images_per_s": tally.rate(self.dist.world_size),
                "skipped_images": tally.skipped, "lr": self.scheduler.get_last_lr()[0]}

    def _scores(self, model: nn.Module, dataset, progress) -> tuple[np.ndarray, np.ndarray, int]:
        t = self.recipe.train
        _, scores, targets, skipped = predict(
            model, dataset, self.device, batch_size=t.batch_size, workers=self.recipe.data.workers,
            amp_dtype=self.amp_dtype, dist=self.dist, progress=progress)
        return scores, targets, skipped

    # ------------------------------------------------------------------------------- selection
    @property
    def selection_set(self):
        """The images epochs are scored on: the test split under the paper's protocol, else the
        validation split or the hold-out; None when there are none (no selection)."""
        if self.recipe.train.select_on == "test":
            return self.test_set
        return self.val_set if self.val_set is not None else self.holdout_set

    @property
    def threshold_set(self):
        """The images the per-class thresholds are fitted on: never the test split."""
        return self.val_set if self.val_set is not None else self.holdout_set

    def _split_name(self, dataset) -> str:
        d = self.recipe.data
        if dataset is None:
            return "none"
        if dataset is self.test_set:
            return f"test ({d.test_split}, {len(dataset)} images)"
        if dataset is self.val_set:
            return f"validation split ({dataset.source}, {len(dataset)} images)"
        return (f"hold-out ({len(dataset)} of the {d.train_split} images, train.threshold_holdout "
                f"{self.recipe.train.threshold_holdout:g}, seed {self.recipe.train.seed})")

    def _describe_protocol(self) -> str:
        """One line, printed at the start: what the epochs are scored on and what the test figure is."""
        t = self.recipe.train
        test = (f"the {self.recipe.data.test_split} split is evaluated once, at the end, on best.pt"
                if self.test_set is not None else
                f"no test figure: {self.recipe.data.root}/{self.recipe.data.test_split}.csv does not exist")
        if t.select_on == "test":
            return (f"selection: best epoch and model/EMA by test mAP ({self._split_name(self.test_set)}; "
                    f"train.select_on test, the paper's protocol): the test figure is a selected one, "
                    f"optimistic")
        if self.selection_set is None:
            weights = "EMA" if t.ema_decay > 0 else "model"
            return (f"selection: none (no validation split and train.threshold_holdout 0): best.pt is the "
                    f"last epoch's {weights} weights; {test}")
        return f"selection: best epoch and model/EMA by mAP on the {self._split_name(self.selection_set)}; {test}"

    def _evaluate(self, model: nn.Module, dataset, progress) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
        """Metrics of `model` on `dataset` at the global threshold, and the (scores, targets) they came from."""
        scores, targets, skipped = self._scores(model, dataset, progress)
        return {**score(scores, targets, self.recipe.train.threshold), "skipped_images": skipped}, (scores, targets)

    def _fit_thresholds(self, model: nn.Module, which: str, scored: tuple[np.ndarray, np.ndarray] | None,
                        progress) -> dict[str, Any]:
        """Per-class F1-optimal thresholds of `model` on the validation images (never the test split);
        `scored`: its (scores, targets) there when already computed."""
        from ..metrics import f1_optimal_thresholds

        if scored is None:
            scores, targets, _ = self._scores(model, self.threshold_set, progress)
        else:
            scores, targets = scored
        self.thresholds = f1_optimal_thresholds(scores, targets, default=self.recipe.train.threshold).tolist()
        return {"thresholds_fitted_on": self._split_name(self.threshold_set), "thresholds_source": which}

    def _sync_buffers(self) -> None:
        """DDP keeps weights equal but BatchNorm statistics drift per rank (each normalises its own
        batches); take rank 0's, so every rank evaluates, and rank 0 saves, the same model."""
        if not self.dist.enabled:
            return
        for module in [self.model] + ([self.ema.module] if self.ema is not None else []):
            persistent = set(module.state_dict())
            for name, buffer in module.named_buffers():
                if name in persistent:
                    torch.distributed.broadcast(buffer, src=0)

    def _weights(self, which: str) -> nn.Module:
        return self.ema.module if which == "ema" else self.model

    def _score_epoch(self, progress) -> tuple[str, dict[str, dict], dict[str, tuple]]:
        """(which weights won, {weights: metrics}, {weights: (scores, targets)}) on the selection
        images; without any, the EMA (the model without one) and no figures."""
        dataset = self.selection_set
        if dataset is None:
            return ("ema" if self.ema is not None else "model"), {}, {}
        names = ["model"] + (["ema"] if self.ema is not None else [])
        evaluated = {name: self._evaluate(self._weights(name), dataset, progress) for name in names}
        results = {name: metrics for name, (metrics, _) in evaluated.items()}
        which = max(results, key=lambda k: rank_key(results[k]["mAP"]))
        return which, results, {name: scored for name, (_, scored) in evaluated.items()}

    def _end_epoch(self, train_stats: dict[str, float], progress) -> None:
        self._sync_buffers()
        validation_started = time.perf_counter()
        which, results, scored = self._score_epoch(progress)
        self.validation_s = self._from_rank0(time.perf_counter() - validation_started)
        record = {"epoch": self.epoch + 1, "step": self.global_step, **train_stats}
        if results:
            record.update({"split": self._split_name(self.selection_set),
                           **{f"{k}_{m}": results[k][m] for k in results for m in ("mAP", "CF1", "OF1")},
                           "best_of_epoch": which})
        self.history.append(record)
        self.epoch += 1
        self.batches_done = 0
        improved = (not results or "epoch" not in self.best
                    or rank_key(results[which]["mAP"]) > rank_key(self.best["mAP"]))
        if improved:
            self.best = {"epoch": self.epoch, "weights": which, "selected_on": self._split_name(self.selection_set),
                         **(results[which] if results else {"mAP": math.nan})}
            if self.threshold_set is not None:
                reuse = scored.get(which) if self.threshold_set is self.selection_set else None
                self.best.update(self._fit_thresholds(self._weights(which), which, reuse, progress))
        self._stop_or_replan(self._from_rank0(self._elapsed()))
        if self.stopped is not None:
            record.update({"stopped": self.stopped["reason"], "stop_detail": self.stopped["detail"]})
        if self.dist.is_main:
            if improved:
                save_checkpoint(self.out_dir / "best.pt", {**self._common(), "model": self._weights(which).state_dict(),
                                                           "metrics": self.best})
            self.save_last()
            self._write_history()
            msg = f"epoch {self.epoch}/{self.recipe.train.epochs}  loss {record['train_loss']:.4f}  "
            if results:
                msg += (f"val mAP {results['model']['mAP']:.2f}"
                        + (f"  EMA {results['ema']['mAP']:.2f}" if "ema" in results else "")
                        + f"  best {self.best['mAP']:.2f} ({self.best['weights']}, epoch {self.best['epoch']})  ")
            msg += f"{record['images_per_s']:.1f} img/s"
            if self.recipe.train.select_on == "test":
                msg = msg.replace("val mAP", "test mAP")
            (progress.console.print if progress is not None else print)(msg)
            if self.stopped is not None:
                (progress.console.print if progress is not None else print)(
                    f"stopped after epoch {self.epoch} ({self.stopped['reason']}): {self.stopped['detail']}")
        barrier(self.dist)

    def _from_rank0(self, value: float) -> float:
        """Rank 0's value on every rank (wall-clock decisions must agree across DDP ranks)."""
        if not self.dist.enabled:
            return value
        x = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.broadcast(x, src=0)
        return float(x.item())

    def _over_budget(self) -> bool:
        """The time budget is spent (an epoch longer than the budget is cut short)."""
        t = self.recipe.train
        return t.time_budget > 0 and self._from_rank0(self._elapsed()) > t.time_budget * 60

    def _epoch_seconds(self) -> float:
        """What the next epoch will take: the latest epoch's seconds (training + validation). The
        first epoch's only while there is no other: it also pays for start-up (workers, caches,
        first-call allocations), so reading it longer would end the cosine with budget unused."""
        ends = self.epoch_ends
        return ends[-1] - (ends[-2] if len(ends) > 1 else 0.0)

    @property
    def horizon_fixed(self) -> bool:
        """The cosine's horizon is read after epochs 1 and 2, then kept."""
        return len(self.epoch_ends) >= 2

    def _stop_or_replan(self, epoch_end_s: float) -> dict[str, str] | None:
        """At an epoch's end (seconds of training + validation so far, rank 0's): whether the run
        stops (self.stopped), and if not, the cosine's horizon read again from this epoch's pace."""
        self.epoch_ends.append(epoch_end_s)
        self.stopped = self._stop_rule()
        if self.stopped is None:
            self._update_horizon()
        return self.stopped

    def _cosine_ended(self) -> bool:
        """The cosine sized to the time budget has reached its end (the learning rate is 0: more
        steps would not change the model)."""
        t = self.recipe.train
        return t.schedule == "cosine" and t.time_budget > 0 and self.global_step >= self.horizon_steps

    def _update_horizon(self) -> None:
        """cosine with a time budget: the horizon is the optimizer steps that fit in what is left of
        the budget at the latest epoch's pace: whole epochs (training + validation), then the steps
        of a shorter last epoch that leave time for its validation; the run ends where the cosine
        does. Estimated after the first epoch, fixed after the second (the learning rate moves
        once, early). The shorter last epoch uses the budget whole epochs would leave, and the stop
        rule reads the same horizon, so no epoch trains at a learning rate of 0."""
        t = self.recipe.train
        # fixed once read from two epochs: the one that just ended is the third
        if t.schedule != "cosine" or t.time_budget <= 0 or len(self.epoch_ends) > 2:
            return
        epoch_s = max(self._epoch_seconds(), 1e-9)
        step_s = max(epoch_s - self.validation_s, 1e-9) / self.steps_per_epoch
        left = t.time_budget * 60 - self.epoch_ends[-1]
        whole = int(max(left, 0.0) // epoch_s)
        rest = left - whole * epoch_s - self.validation_s      # for the last epoch's training steps
        steps = whole * self.steps_per_epoch + (int(rest // step_s) if rest > 0 else 0)
        self.horizon_steps = max(1, min(t.epochs * self.steps_per_epoch, self.global_step + steps))
        if self.dist.is_main:
            log.info("time budget %g min, ~%.0f s per epoch: the learning rate's cosine ends at step %d "
                     "(epoch %.1f)%s", t.time_budget, epoch_s, self.horizon_steps,
                     self.horizon_steps / self.steps_per_epoch,
                     "" if self.horizon_fixed else ", estimated again after the next epoch")

    def _stop_rule(self) -> dict[str, str] | None:
        """Why the run stops after the epoch just ended, or None: patience (validation mAP not
        improved for train.patience epochs), time budget (the cosine sized to it ended, or the
        budget is spent; with another schedule: another epoch would not fit), epochs."""
        t = self.recipe.train
        if t.patience > 0 and self.selection_set is not None and self.epoch - self.best["epoch"] >= t.patience:
            return {"reason": "patience",
                    "detail": f"validation mAP not improved for {self.epoch - self.best['epoch']} epochs "
                              f"(train.patience {t.patience}; best {self.best['mAP']:.2f} at epoch {self.best['epoch']})"}
        if t.time_budget > 0 and self.epoch < t.epochs:
            elapsed, budget = self.epoch_ends[-1], t.time_budget * 60
            used = f"{elapsed / 60:.1f} of the {t.time_budget:g} min budget (train.time_budget) used; "
            if t.schedule == "cosine":
                # the horizon holds what fits (a shorter last epoch included); past the budget
                # only when the epochs ran slower than the ones it was read from (then cut short)
                if self._cosine_ended():
                    return {"reason": "time budget", "detail": used + "the learning rate's cosine, sized to it, ended"}
                if elapsed >= budget:
                    return {"reason": "time budget", "detail": used + f"the learning rate's cosine, sized to it, "
                                                                      f"stopped at step {self.global_step}"}
            elif elapsed + self._epoch_seconds() > budget:
                return {"reason": "time budget",
                        "detail": used + f"another epoch (~{self._epoch_seconds():.0f} s) would not fit"}
        if self.epoch >= t.epochs:
            return {"reason": "epochs", "detail": f"the last of train.epochs {t.epochs}"}
        return None

    def _final_test(self, progress) -> dict[str, Any]:
        """The test split, once, on best.pt's weights (read back from best.pt, so a resumed run
        tests what was selected before it stopped): the run's result. Without a test split, the
        selection figures, marked as such."""
        barrier(self.dist)   # rank 0 wrote best.pt
        if self.test_set is None:
            log.warning("no test split (%s/%s.csv): no test figure; the figures below are the validation ones "
                        "best.pt was selected on", self.recipe.data.root, self.recipe.data.test_split)
            return {**self.best, "split": "none (validation figures)", **self._stop_fields()}
        self.model.load_state_dict(load_checkpoint(self.out_dir / "best.pt")["model"])
        metrics, (scores, targets) = self._evaluate(self.model, self.test_set, progress)
        result = {"split": "test", "epoch": self.best["epoch"], "weights": self.best["weights"],
                  "selected_on": self.best["selected_on"], "selection_mAP": self.best["mAP"], **metrics,
                  **self._stop_fields()}
        if self.recipe.train.select_on == "test":
            result["note"] = "selected on this test split (train.select_on test): an optimistic, best-of-epochs figure"
        if "thresholds_fitted_on" in self.best:
            from ..metrics import multilabel_prf
            result["per_class_thresholds"] = {"fitted_on": self.best["thresholds_fitted_on"],
                                              **multilabel_prf(scores, targets, np.asarray(self.thresholds))}
        if self.dist.is_main:
            best = load_checkpoint(self.out_dir / "best.pt")
            save_checkpoint(self.out_dir / "best.pt", {**best, "metrics": result})
            self._write_history(result)
            if result.get("note"):
                log.warning("test mAP %.2f: %s", result["mAP"], result["note"])
        return result

    def _stop_fields(self) -> dict[str, Any]:
        return ({"stopped": self.stopped["reason"], "stop_detail": self.stopped["detail"], "epochs_run": self.epoch}
                if self.stopped is not None else {})

    def _write_history(self, test_row: dict[str, Any] | None = None) -> None:
        """metrics.jsonl: the epochs' rows, then the test row once the run has one."""
        rows = self.history + ([test_row] if test_row is not None else [])
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_bytes(self.out_dir / "metrics.jsonl", lines.encode())
        from ..plots import plot_curves
        plot_curves(self.history, self.out_dir / "curves.png")
