"""Trainer: exact resume, DDP on two CPU processes, broken images, checkpoints, the eval command."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlic_edge.checkpoint import load_checkpoint, load_model
from mlic_edge.config import Recipe
from mlic_edge.core.errors import CheckpointError

CLASSES = ["red", "green", "blue"]


def make_folder_dataset(root: Path, n_train: int = 24, n_test: int = 12, seed: int = 0) -> Path:
    """Images with coloured squares; the labels are the colours present (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n in (("train", n_train), ("test", n_test)):
        rows = ["image,labels"]
        for i in range(n):
            canvas = np.full((48, 48, 3), 128, np.uint8)
            labels = [c for c in CLASSES if rng.random() < 0.5] or [CLASSES[i % 3]]
            for c in labels:
                y, x = rng.integers(0, 32, size=2)
                canvas[y:y + 16, x:x + 16] = colours[c]
            name = f"img/{split}{i:03d}.png"
            Image.fromarray(canvas).save(root / name)
            rows.append(f"{name},{';'.join(labels)}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def tiny_recipe(data_root: Path, **train) -> Recipe:
    return Recipe.from_dict({
        "model": {"backbone": "test_resnet", "pretrained": "none", "image_size": 64, "d_model": 32,
                  "nhead": 4, "dim_feedforward": 64, "num_classes": 3},
        "data": {"name": "folder", "root": str(data_root), "workers": 0},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.9, "device": "cpu",
                  "randaugment": "rand-m9-mstd0.5-inc1", "cutout": True, **train},
    })


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("colours"))


def run(recipe: Recipe, out: Path, resume: bool = False):
    from mlic_edge.train.trainer import Trainer
    trainer = Trainer(recipe, out, resume=resume, show_progress=False)
    return trainer, trainer.fit()


def test_training_writes_checkpoints_metrics_and_plot(data_root, tmp_path):
    trainer, best = run(tiny_recipe(data_root), tmp_path / "run")
    out = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "recipe.yaml"):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "lr", "model_mAP", "ema_mAP", "images_per_s"} <= set(lines[0])
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["classes"] == CLASSES and ckpt["thresholds"] == [0.5] * 3
    assert ckpt["preprocess"]["image_size"] == 64 and "train_state" not in ckpt
    assert ckpt["metrics"]["mAP"] == pytest.approx(best["mAP"])
    assert not list(out.glob(".*tmp"))  # no temp files left behind
    # The optimiser follows the paper: AdamW betas (0.9, 0.9999), not cycled by OneCycleLR.
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.9999)


def test_backbone_lr_scale_gives_the_backbone_its_own_one_cycle(data_root, tmp_path):
    """backbone_lr_scale s: the backbone's parameters peak at lr x s, the rest at lr; the groups
    partition the parameters. Without it there is one group (older checkpoints' layout)."""
    from mlic_edge.train.trainer import Trainer

    trainer = Trainer(tiny_recipe(data_root, epochs=1, backbone_lr_scale=0.1), tmp_path / "scaled",
                      show_progress=False)
    backbone, head = trainer.optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in trainer.model.backbone.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(trainer.model.parameters()))
    assert backbone["max_lr"] == pytest.approx(1e-4) and head["max_lr"] == pytest.approx(1e-3)
    trainer.fit()
    assert backbone["lr"] == pytest.approx(head["lr"] * 0.1)           # the same schedule, scaled
    plain = Trainer(tiny_recipe(data_root, epochs=1), tmp_path / "plain", show_progress=False)
    assert len(plain.optimizer.param_groups) == 1


class InterruptAt:
    """Loss wrapper that presses Ctrl-C (a real SIGINT) during the n-th forward pass."""

    def __init__(self, criterion, n: int):
        self.criterion, self.n, self.calls = criterion, n, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.n:
            os.kill(os.getpid(), signal.SIGINT)
        return self.criterion(*args)


def test_resume_after_interrupt_equals_uninterrupted_run(data_root, tmp_path):
    from mlic_edge.train.trainer import Interrupted, Trainer

    recipe = tiny_recipe(data_root, epochs=2, batch_size=5)  # 24 images -> 5 steps per epoch
    run(recipe, tmp_path / "straight")

    trainer = Trainer(recipe, tmp_path / "split", show_progress=False)
    trainer.criterion = InterruptAt(trainer.criterion, n=7)  # in the middle of epoch 2
    with pytest.raises(Interrupted, match="--resume"):
        trainer.fit()
    saved = load_checkpoint(tmp_path / "split" / "last.pt")["train_state"]
    # The step in flight when Ctrl-C came (the 7th) completes, then the run stops and saves.
    assert (saved["epoch"], saved["global_step"], saved["batches_done"]) == (1, 7, 2)
    run(recipe, tmp_path / "split", resume=True)

    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["train_state"]["global_step"] == b["train_state"]["global_step"] == 10
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["train_state"]["ema"].items():
        assert torch.equal(value, b["train_state"]["ema"][key]), key


def test_broken_and_missing_images_are_skipped_and_named(tmp_path, caplog):
    root = make_folder_dataset(tmp_path / "data", n_train=16, n_test=8)
    (root / "img" / "train000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt
    (root / "img" / "train001.png").unlink()                                      # missing
    caplog.set_level("WARNING")
    _, best = run(tiny_recipe(root, epochs=1), tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["skipped_images"] == 2
    assert "train000.png" in caplog.text and "train001.png" in caplog.text
    assert np.isfinite(best["mAP"])


def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(data_root, tmp_path):
    from mlic_edge.train.trainer import Trainer, TrainingError

    recipe = tiny_recipe(data_root, epochs=2, batch_size=8)
    trainer = Trainer(recipe, tmp_path / "run", show_progress=False)
    real = trainer.criterion
    calls = {"n": 0}

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] == 5 else loss  # epoch 2, after last.pt

    trainer.criterion = poisoned
    with pytest.raises(TrainingError, match="loss became nan"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["train_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes(data_root, tmp_path):
    """2 gloo ranks: identical weights at the end, and the gathered mAP equals a one-process eval."""
    recipe = tiny_recipe(data_root, epochs=1, batch_size=4)
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    script = tmp_path / "ddp_job.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from mlic_edge.config import Recipe
        from mlic_edge.train.trainer import Trainer
        recipe = Recipe.load({str(tmp_path / 'recipe.yaml')!r})
        trainer = Trainer(recipe, {str(tmp_path / 'run')!r}, show_progress=False)
        assert trainer.dist.world_size == 2
        trainer.fit()
        torch.save(trainer.model.state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(_free_port()), str(script)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # Each rank saw half of every epoch: 24 images / (2 ranks x 4) = 3 steps.
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["global_step"] == 3

    from mlic_edge.data import build_dataset, build_transform
    from mlic_edge.train.evaluate import predict, score
    model, ckpt = load_model(tmp_path / "run" / "last.pt")
    test_set = build_dataset("folder", data_root, "test", build_transform(ckpt["preprocess"], train=False))
    _, scores, targets, _ = predict(model, test_set, torch.device("cpu"))
    history = ckpt["train_state"]["history"]
    assert score(scores, targets)["mAP"] == pytest.approx(history[-1]["model_mAP"], abs=1e-4)


def test_eval_command_json_and_plot(data_root, tmp_path):
    from typer.testing import CliRunner

    from mlic_edge.cli import app
    run(tiny_recipe(data_root, epochs=1), tmp_path / "run")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "run" / "best.pt"), "--data", "folder",
                                      "--data-root", str(data_root), "--device", "cpu", "--workers", "0",
                                      "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_ap"):
        assert key in metrics
    assert len(metrics["per_class_ap"]) == 3
    assert (tmp_path / "eval.png").is_file()


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="best.pt"):
        load_checkpoint(bad)
    proc = subprocess.run([sys.executable, "-m", "mlic_edge", "eval", str(bad), "--data", "digits"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "best.pt" in proc.stderr
