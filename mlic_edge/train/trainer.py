"""The training loop: AdamW + one-cycle, AMP, EMA, DDP, exact resume, atomic checkpoints.

Run folder layout (rank 0 writes, atomically):
    recipe.yaml      the full recipe of the run
    last.pt          everything needed to resume (weights, optimizer, scheduler, EMA, position, RNG)
    best.pt          the best weights seen (model or EMA, whichever scored higher), for deployment
    metrics.jsonl    one line per epoch
    curves.png       loss, learning rate and mAP per epoch
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
from ..core.errors import MLICError
from ..core.files import atomic_write_bytes
from ..model import build_model
from .distributed import DistInfo, barrier, cleanup, init_distributed, resolve_device
from .evaluate import autocast_context, predict, score
from .loader import IndexedSamples, ResumableSampler, collate_indexed

log = logging.getLogger(__name__)


class TrainingError(MLICError):
    pass


class Interrupted(Exception):
    """Ctrl-C during training: the state was saved to last.pt."""


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
    """Train and test datasets, without transforms yet (they depend on the backbone)."""
    from ..data import build_dataset

    d = recipe.data
    return (build_dataset(d.name, d.root or None, d.train_split),
            build_dataset(d.name, d.root or None, d.test_split))


def set_transforms(train_set, test_set, preprocess: dict, recipe: Recipe) -> None:
    from ..data import build_transform

    t = recipe.train
    train_set.transform = build_transform(preprocess, train=True, cutout=t.cutout,
                                          randaugment=t.randaugment)
    test_set.transform = build_transform(preprocess, train=False)


class Trainer:
    def __init__(self, recipe: Recipe, out_dir: str | Path, resume: bool = False,
                 show_progress: bool = True, notes: str = ""):
        self.out_dir = Path(out_dir)
        self.show_progress = show_progress
        state = None
        if resume:
            state = load_checkpoint(self.out_dir / "last.pt")
            if "train_state" not in state:
                raise TrainingError(f"{self.out_dir / 'last.pt'}: holds no training state to resume")
            recipe = Recipe.from_dict(state["recipe"])  # the run continues as it was started
        self.device = preflight(recipe)
        self.train_set, self.test_set = build_datasets(recipe)
        self.classes = list(self.train_set.classes)
        if list(self.test_set.classes) != self.classes:
            raise TrainingError(f"{recipe.data.name}: train and test splits list different classes "
                                f"(a folder dataset with other split names needs a classes.txt)")
        self.holdout_set = (self.train_set.split_off(recipe.train.threshold_holdout, recipe.train.seed)
                            if recipe.train.threshold_holdout > 0 else None)
        self.thresholds = [recipe.train.threshold] * len(self.classes)
        # The data defines the label set; a recipe's num_classes only documents it.
        recipe = recipe.with_values({"model.num_classes": len(self.classes)})
        self.recipe = recipe
        t = recipe.train
        self.dist: DistInfo = init_distributed(self.device)
        torch.manual_seed(t.seed)  # same initial weights on every rank
        self.amp_dtype = resolve_amp(t.amp, self.device)

        self.model = build_model(recipe.model if state is None
                                 else recipe.model.replace(pretrained="none")).to(self.device)
        self.preprocess = self.model.data_config()
        set_transforms(self.train_set, self.test_set, self.preprocess, recipe)
        if self.holdout_set is not None:
            self.holdout_set.transform = self.test_set.transform
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if state is None:
            recipe = self._fit_in_memory(recipe)
            self.recipe, t = recipe, recipe.train
            if self.dist.is_main:
                from ..data.split_check import split_warnings
                for warning in split_warnings(self.train_set, self.test_set):
                    log.warning(warning)

        self.ema = None
        if t.ema_decay > 0:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(self.model, decay=t.ema_decay)

        self.net: nn.Module = self.model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if t.compile and self.device.type == "cuda":
            self.net = torch.compile(self.net)

        self.sampler = ResumableSampler(len(self.train_set), t.seed, self.dist.rank, self.dist.world_size)
        self.train_samples = IndexedSamples(self.train_set, seed=t.seed)
        self.loader = DataLoader(self.train_samples, batch_size=t.batch_size, sampler=self.sampler,
                                 num_workers=recipe.data.workers, collate_fn=collate_indexed,
                                 pin_memory=self.device.type == "cuda", drop_last=False,
                                 # Own generator: creating an iterator must not draw from the
                                 # global RNG (dropout), or a resumed run would diverge.
                                 generator=torch.Generator().manual_seed(t.seed))
        batches = math.ceil(len(self.sampler) / t.batch_size)
        self.steps_per_epoch = math.ceil(batches / t.grad_accum)
        if t.max_steps_per_epoch > 0:
            self.steps_per_epoch = min(self.steps_per_epoch, t.max_steps_per_epoch)

        from ..losses import build_loss
        self.criterion = build_loss(t.loss, **t.loss_args)
        groups, max_lr = self._parameter_groups(t)
        self.optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas),
                                           weight_decay=t.weight_decay,
                                           fused=self.device.type == "cuda")  # one kernel per step
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=max_lr, total_steps=t.epochs * self.steps_per_epoch,
            pct_start=t.pct_start, cycle_momentum=t.cycle_momentum)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # Position: `epoch` is the epoch in progress; `batches_done` counts its micro-batches up
        # to the last optimizer step (a resume starts right after them).
        self.epoch, self.batches_done, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": -1.0}
        self.skipped_total = 0
        if state is not None:
            self._restore(state)
        elif self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            header = "".join(f"# {line}\n" for line in notes.splitlines())
            atomic_write_bytes(self.out_dir / "recipe.yaml", (header + recipe.to_yaml()).encode())
        self._snapshot_rng()

    def _parameter_groups(self, t) -> tuple[list[dict[str, Any]], list[float] | float]:
        """AdamW's parameter groups and their one-cycle maxima: one group at lr, or with
        backbone_lr_scale != 1 the backbone at lr x scale and the rest at lr (two groups only
        then, so runs without it keep the optimizer state layout of older checkpoints)."""
        if t.backbone_lr_scale == 1.0:
            return [{"params": list(self.model.parameters())}], t.lr
        backbone = list(self.model.backbone.parameters())
        ids = {id(p) for p in backbone}
        head = [p for p in self.model.parameters() if id(p) not in ids]
        return ([{"params": backbone, "lr": t.lr * t.backbone_lr_scale}, {"params": head, "lr": t.lr}],
                [t.lr * t.backbone_lr_scale, t.lr])

    def _fit_in_memory(self, recipe: Recipe) -> Recipe:
        """Measure what a step needs before the first one (train/memory.py): a smaller micro-batch
        with gradient accumulation when the batch does not fit, a one-line error when one image
        does not."""
        from .memory import gib, plan_memory

        t, size = recipe.train, recipe.model.image_size
        plan = plan_memory(self.model, size, t.batch_size, t.grad_accum, self.device,
                           ema=t.ema_decay > 0, channels_last=t.channels_last)
        if plan.batch_size == 0:
            smaller = "--model lite0-224" if recipe.model.backbone != "tf_efficientnet_lite0" else f"--image-size {size // 2}"
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
        """Train to the last epoch. Ctrl-C (SIGINT) finishes the optimizer step in flight, saves
        last.pt and raises Interrupted; a second Ctrl-C aborts at once, leaving the last.pt of
        the previous save intact (it is only ever replaced atomically)."""
        t = self.recipe.train
        progress = self._progress()
        previous_handler = self._install_sigint_handler()
        try:
            with progress or nullcontext():
                while self.epoch < t.epochs:
                    train_stats = self._train_epoch(progress)
                    if train_stats is None:  # stop requested mid-epoch, at a step boundary
                        self.save_last()
                        raise Interrupted(
                            f"interrupted: state saved to {self.out_dir / 'last.pt'} (epoch "
                            f"{self.epoch + 1}, step {self.global_step}); continue with --resume")
                    self._end_epoch(train_stats, progress)
        except KeyboardInterrupt:
            raise Interrupted(f"aborted; {self.out_dir / 'last.pt'} holds the last saved state "
                              f"(continue with --resume)") from None
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            cleanup(self.dist)
        return self.best

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
        t = self.recipe.train
        self.net.train()
        self.sampler.set_epoch(self.epoch, skip_samples=self.batches_done * t.batch_size)
        self.train_samples.set_epoch(self.epoch)
        steps_done_at_start = math.ceil(self.batches_done / t.grad_accum)
        task = None
        if progress is not None:
            task = progress.add_task(f"epoch {self.epoch + 1}/{t.epochs}", total=self.steps_per_epoch,
                                     completed=steps_done_at_start, info="")
        loss_sum, n_images, skipped, t0 = 0.0, 0, 0, time.perf_counter()
        step_in_epoch = steps_done_at_start
        micro = 0
        batches_left = len(self.loader)
        for batch_i, (_, images, targets, n_skipped) in enumerate(self.loader):
            if step_in_epoch >= self.steps_per_epoch:
                break
            skipped += n_skipped
            last_of_step = (micro + 1 == t.grad_accum) or (batch_i + 1 == batches_left)
            if images is not None:
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
                loss_sum += loss_value * images.shape[0]
                n_images += images.shape[0]
            micro += 1
            if last_of_step:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model, step=self.global_step)
                self.global_step += 1
                self._snapshot_rng()
                step_in_epoch += 1
                self.batches_done += micro
                micro = 0
                if task is not None:
                    rate = n_images * self.dist.world_size / max(time.perf_counter() - t0, 1e-9)
                    progress.update(task, advance=1, info=f"loss {loss_sum / max(n_images, 1):.4f} "
                                    f"lr {self.scheduler.get_last_lr()[0]:.2e} {rate:.1f} img/s")
                if self._should_stop() and step_in_epoch < self.steps_per_epoch:
                    if task is not None:
                        progress.remove_task(task)
                    return None
        if task is not None:
            progress.remove_task(task)
        elapsed = time.perf_counter() - t0
        self.skipped_total += skipped
        if skipped:
            log.warning("epoch %d: skipped %d unreadable image(s) (see warnings above)", self.epoch + 1, skipped)
        return {"train_loss": loss_sum / max(n_images, 1),
                "images_per_s": n_images * self.dist.world_size / max(elapsed, 1e-9),
                "skipped_images": skipped, "lr": self.scheduler.get_last_lr()[0]}

    def _scores(self, model: nn.Module, dataset, progress) -> tuple[np.ndarray, np.ndarray, int]:
        t = self.recipe.train
        _, scores, targets, skipped = predict(
            model, dataset, self.device, batch_size=t.batch_size, workers=self.recipe.data.workers,
            amp_dtype=self.amp_dtype, dist=self.dist, progress=progress)
        return scores, targets, skipped

    def _evaluate(self, model: nn.Module, progress) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
        """Test metrics at the global threshold, and the (scores, targets) they came from."""
        scores, targets, skipped = self._scores(model, self.test_set, progress)
        return {**score(scores, targets, self.recipe.train.threshold), "skipped_images": skipped}, (scores, targets)

    def _pick_thresholds(self, model: nn.Module, which: str, test: tuple[np.ndarray, np.ndarray],
                         progress) -> dict[str, Any]:
        """Per-class F1-optimal thresholds of `model` on the held-out training images (never the
        test split); its test metrics at those thresholds go next to the global ones."""
        from ..metrics import f1_optimal_thresholds, multilabel_prf

        scores, targets, _ = self._scores(model, self.holdout_set, progress)
        self.thresholds = f1_optimal_thresholds(scores, targets, default=self.recipe.train.threshold).tolist()
        at_class = multilabel_prf(*test, np.asarray(self.thresholds))
        return {"per_class_thresholds": {"holdout_images": len(self.holdout_set), "source": which, **at_class}}

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

    def _end_epoch(self, train_stats: dict[str, float], progress) -> None:
        self._sync_buffers()
        evaluated = {"model": self._evaluate(self.model, progress)}
        if self.ema is not None:
            evaluated["ema"] = self._evaluate(self.ema.module, progress)
        results = {name: metrics for name, (metrics, _) in evaluated.items()}
        which = max(results, key=lambda k: results[k]["mAP"])
        record = {"epoch": self.epoch + 1, "step": self.global_step, **train_stats,
                  **{f"{k}_{m}": results[k][m] for k in results for m in ("mAP", "CF1", "OF1")},
                  "best_of_epoch": which}
        self.history.append(record)
        self.epoch += 1
        self.batches_done = 0
        improved = results[which]["mAP"] > self.best["mAP"]
        if improved:
            self.best = {"epoch": self.epoch, "weights": which, **results[which]}
            if self.holdout_set is not None:
                self.best.update(self._pick_thresholds(self.ema.module if which == "ema" else self.model,
                                                       which, evaluated[which][1], progress))
        if self.dist.is_main:
            if improved:
                weights = (self.ema.module if which == "ema" else self.model).state_dict()
                save_checkpoint(self.out_dir / "best.pt", {**self._common(), "model": weights,
                                                           "metrics": self.best})
            self.save_last()
            self._write_history()
            msg = (f"epoch {self.epoch}/{self.recipe.train.epochs}  loss {record['train_loss']:.4f}  "
                   f"mAP {results['model']['mAP']:.2f}"
                   + (f"  EMA mAP {results['ema']['mAP']:.2f}" if "ema" in results else "")
                   + f"  best {self.best['mAP']:.2f} ({self.best['weights']}, epoch {self.best['epoch']})"
                   + f"  {record['images_per_s']:.1f} img/s")
            (progress.console.print if progress is not None else print)(msg)
        barrier(self.dist)

    def _write_history(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_bytes(self.out_dir / "metrics.jsonl", lines.encode())
        from ..plots import plot_curves
        plot_curves(self.history, self.out_dir / "curves.png")
