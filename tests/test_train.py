"""Trainer: selection on validation images with the test split touched once, exact resume, DDP on
two CPU processes, broken images, checkpoints, the eval command."""
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

from mlic_edge.checkpoint import load_checkpoint, load_model
from mlic_edge.config import Recipe
from mlic_edge.core.errors import CheckpointError
from tiny_model import FOLDER_CLASSES as CLASSES
from tiny_model import make_folder_dataset, run, tiny_recipe



@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("colours"))


def independent_test_map(checkpoint: Path, root: Path) -> float:
    """best.pt's test mAP computed here, not by the trainer: its weights on every test image in
    one forward pass, AP per class by scikit-learn, the mean over classes with a positive, in %."""
    from sklearn.metrics import average_precision_score

    from mlic_edge.data import build_dataset, build_transform
    model, ckpt = load_model(checkpoint)
    test_set = build_dataset("folder", root, "test", build_transform(ckpt["preprocess"], train=False))
    with torch.no_grad():
        scores = torch.sigmoid(model.eval()(torch.stack([image for image, _ in test_set]))).numpy()
    targets = test_set.targets
    return 100 * float(np.mean([average_precision_score(targets[:, k], scores[:, k])
                                for k in range(targets.shape[1]) if targets[:, k].any()]))


def test_training_writes_checkpoints_metrics_and_plot(data_root, tmp_path, monkeypatch):
    ScriptedValidation(monkeypatch, [90, 50])        # epoch 1 is selected: best.pt is not the last weights
    trainer, best = run(tiny_recipe(data_root), tmp_path / "run")
    out = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "recipe.yaml"):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    *epochs, test = lines
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["split"].startswith("hold-out (2 of") for r in epochs)
    assert {"train_loss", "lr", "model_mAP", "ema_mAP", "images_per_s"} <= set(epochs[0])
    assert test["split"] == "test" and "note" not in test and test["epoch"] == 1
    # the test row is best.pt's weights on the test split, recomputed here independently
    assert test["mAP"] == pytest.approx(independent_test_map(out / "best.pt", data_root), abs=1e-4)
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["classes"] == CLASSES and len(ckpt["thresholds"]) == 3
    assert ckpt["preprocess"]["image_size"] == 64 and "train_state" not in ckpt
    assert ckpt["metrics"] == test and best == test          # what fit() returns is that row
    assert not list(out.glob(".*tmp"))  # no temp files left behind
    # The optimiser follows the paper: AdamW betas (0.9, 0.9999), not cycled by OneCycleLR.
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.9999)


class ScoredSplits:
    """Records which split each evaluation of the Trainer ran on (by its source file name)."""

    def __init__(self, monkeypatch):
        from mlic_edge.train.trainer import Trainer
        self.calls: list[str] = []
        real = Trainer._evaluate

        def evaluate(trainer, model, dataset, progress):
            self.calls.append(Path(dataset.source.split(" ")[0]).stem)
            return real(trainer, model, dataset, progress)
        monkeypatch.setattr(Trainer, "_evaluate", evaluate)


def test_selection_on_val_csv_and_the_test_split_once_at_the_end(tmp_path, monkeypatch):
    """With val.csv: every epoch scores model and EMA on it, the test split is scored once, after
    the last epoch, on best.pt's weights; nothing is held out of the training images."""
    from mlic_edge.train.trainer import Trainer

    root = make_folder_dataset(tmp_path / "data", n_val=8)
    splits = ScoredSplits(monkeypatch)
    trainer = Trainer(tiny_recipe(root, epochs=3), tmp_path / "run", show_progress=False)
    assert len(trainer.train_set) == 24 and trainer.holdout_set is None
    result = trainer.fit()
    assert splits.calls == ["val"] * 6 + ["test"]              # 3 epochs x (model, EMA), then test once
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"].split(" (")[0] for r in rows] == ["validation split"] * 3 + ["test"]
    chosen = max(rows[:3], key=lambda r: max(r["model_mAP"], r["ema_mAP"]))
    assert (result["epoch"], result["selection_mAP"]) == (chosen["epoch"], max(chosen["model_mAP"], chosen["ema_mAP"]))
    # the reported test figure is best.pt's, recomputed here independently of the trainer
    assert independent_test_map(tmp_path / "run" / "best.pt", root) == pytest.approx(rows[-1]["mAP"], abs=1e-4)
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["metrics"]["split"] == "test" and "val.csv" in ckpt["metrics"]["per_class_thresholds"]["fitted_on"]


def test_folder_without_test_csv_trains_and_says_there_is_no_test_figure(tmp_path, monkeypatch, caplog):
    root = make_folder_dataset(tmp_path / "data", n_val=8)
    (root / "test.csv").unlink()
    splits = ScoredSplits(monkeypatch)
    caplog.set_level("WARNING")
    _, result = run(tiny_recipe(root, epochs=1), tmp_path / "run")
    assert "test" not in splits.calls and result["split"].startswith("none")
    assert "no test figure" in caplog.text
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("split", "").split(" (")[0] for r in rows] == ["validation split"]
    assert (tmp_path / "run" / "best.pt").is_file()


def test_select_on_test_is_the_papers_protocol_and_says_so(data_root, tmp_path, monkeypatch, caplog):
    splits = ScoredSplits(monkeypatch)
    caplog.set_level("WARNING")
    _, result = run(tiny_recipe(data_root, epochs=2, select_on="test"), tmp_path / "run")
    assert splits.calls == ["test"] * 5 and result["selection_mAP"] == pytest.approx(result["mAP"])
    assert "selected on this test split" in result["note"]
    assert "selected on this test split" in caplog.text


def test_no_validation_images_means_no_selection(data_root, tmp_path, monkeypatch):
    """threshold_holdout 0 and no val.csv: best.pt is the last epoch's EMA, the test split once."""
    splits = ScoredSplits(monkeypatch)
    _, result = run(tiny_recipe(data_root, epochs=2, threshold_holdout=0.0), tmp_path / "run")
    assert splits.calls == ["test"] and (result["epoch"], result["weights"]) == (2, "ema")
    assert load_checkpoint(tmp_path / "run" / "best.pt")["thresholds"] == [0.5] * 3


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
    from mlic_edge.train.trainer import Trainer, TrainingInterrupted

    recipe = tiny_recipe(data_root, epochs=2, batch_size=5)  # 24 images -> 5 steps per epoch
    run(recipe, tmp_path / "straight")

    trainer = Trainer(recipe, tmp_path / "split", show_progress=False)
    trainer.criterion = InterruptAt(trainer.criterion, n=7)  # in the middle of epoch 2
    with pytest.raises(TrainingInterrupted, match="--resume") as interrupted:
        trainer.fit()
    # the exception carries where the run stopped and the checkpoint to resume from
    assert interrupted.value.last_checkpoint == tmp_path / "split" / "last.pt"
    assert (interrupted.value.epoch, interrupted.value.step) == (2, 7)
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
    # the same selection and the same one test row
    rows = [(tmp_path / run_dir / "metrics.jsonl").read_text().splitlines() for run_dir in ("straight", "split")]
    test_rows = [json.loads(r[-1]) for r in rows]
    assert test_rows[0]["split"] == "test" and len(rows[0]) == len(rows[1]) == 3
    for key in ("epoch", "weights", "mAP", "selection_mAP"):
        assert test_rows[0][key] == pytest.approx(test_rows[1][key]), key


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


# ----------------------------------------------------------------------------------- stop rule
class ScriptedValidation:
    """Trainer._evaluate with scripted validation mAPs (one per epoch, model and EMA alike); the
    test split is scored for real."""

    def __init__(self, monkeypatch, maps):
        from mlic_edge.train.trainer import Trainer
        real = Trainer._evaluate

        def evaluate(trainer, model, dataset, progress):
            metrics, scored = real(trainer, model, dataset, progress)
            if dataset is not trainer.test_set:
                metrics = {**metrics, "mAP": float(maps[trainer.epoch])}
            return metrics, scored
        monkeypatch.setattr(Trainer, "_evaluate", evaluate)


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_patience_stops_after_n_evaluations_without_improvement_and_resume_keeps_the_rule(
        data_root, tmp_path, monkeypatch):
    """patience 3, validation mAPs 50, 60, 55, 60, 59, 90, ...: best at epoch 2 (60 again is not
    better), so the run stops after epoch 5 although 90 would come; interrupted in epoch 3 and
    resumed, it stops at the same epoch; a stopped run resumed trains no further."""
    from mlic_edge.train.trainer import Trainer, TrainingInterrupted

    ScriptedValidation(monkeypatch, [50, 60, 55, 60, 59, 90, 95, 99])
    recipe = tiny_recipe(data_root, epochs=8, patience=3, max_steps_per_epoch=2, randaugment="", cutout=False,
                         schedule="cosine", warmup_steps=3)     # the own-data schedule, resumed too
    _, result = run(recipe, tmp_path / "straight")
    rows = metric_rows(tmp_path / "straight")
    assert [r["epoch"] for r in rows[:-1]] == [1, 2, 3, 4, 5]
    assert [r.get("stopped") for r in rows[:-1]] == [None] * 4 + ["patience"]
    assert "not improved for 3 epochs" in rows[4]["stop_detail"]
    assert rows[-1]["split"] == "test" and rows[-1]["stopped"] == "patience" and rows[-1]["epochs_run"] == 5
    assert (result["epoch"], result["selection_mAP"]) == (2, 60.0)

    trainer = Trainer(recipe, tmp_path / "split", show_progress=False)
    trainer.criterion = InterruptAt(trainer.criterion, n=5)     # epoch 3, first step
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    assert load_checkpoint(tmp_path / "split" / "last.pt")["train_state"]["epoch"] == 2
    run(recipe, tmp_path / "split", resume=True)
    resumed = metric_rows(tmp_path / "split")
    assert [r.get("stopped") for r in resumed] == [None] * 4 + ["patience"] * 2
    assert [r.get("epoch") for r in resumed] == [r.get("epoch") for r in rows]
    assert resumed[-1]["mAP"] == pytest.approx(rows[-1]["mAP"])    # the same weights, tested once
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "split"))
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert a["train_state"]["scheduler"]["_last_lr"] == b["train_state"]["scheduler"]["_last_lr"]

    stopped = Trainer(recipe, tmp_path / "straight", resume=True, show_progress=False)

    def no_training(*args):
        raise AssertionError("a stopped run trained on")
    stopped.criterion = no_training
    again = stopped.fit()
    assert load_checkpoint(tmp_path / "straight" / "last.pt")["train_state"]["global_step"] == 10
    assert len(metric_rows(tmp_path / "straight")) == 6 and again["mAP"] == pytest.approx(result["mAP"])


def test_time_budget_stops_a_run_and_sets_the_cosine_horizon(data_root, tmp_path, caplog):
    """A budget shorter than one step: the first epoch is cut after its first step, validated, and
    the run stops (the reason in metrics.jsonl and the result); the cosine's horizon is one epoch."""
    recipe = tiny_recipe(data_root, epochs=5, time_budget=1e-4, schedule="cosine", warmup_steps=2,
                         max_steps_per_epoch=3, randaugment="", cutout=False)
    caplog.set_level("WARNING")
    trainer, result = run(recipe, tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    assert [r["epoch"] for r in rows[:-1]] == [1] and rows[0]["stopped"] == "time budget"
    assert "budget" in rows[0]["stop_detail"] and result["stopped"] == "time budget"
    assert trainer.global_step == 1 and "ending it after step 1 of 3" in caplog.text
    # stopped before any horizon was read from an epoch: the cosine over train.epochs' steps
    assert trainer.horizon_steps == 5 * 3 and not trainer.horizon_fixed
    f = trainer._cosine_factor
    assert (f(0), f(2), f(15)) == (pytest.approx(1 / 25), pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    assert 0 < f(8) < 1    # the cosine between the warm-up's end and the horizon
    # epochs alone: one-cycle over them, no early stop
    trainer, result = run(tiny_recipe(data_root, epochs=2, max_steps_per_epoch=1), tmp_path / "plain")
    assert result["stopped"] == "epochs" and len(metric_rows(tmp_path / "plain")) == 3
    assert isinstance(trainer.scheduler, torch.optim.lr_scheduler.OneCycleLR)


def test_cosine_horizon_fills_the_time_budget_read_from_the_latest_epoch(data_root, tmp_path):
    """A 1-minute budget, 9 steps per epoch, 2 s of validation per epoch. After a 20 s first
    epoch (start-up included) 40 s are left: 2 whole epochs -> horizon 27 steps, provisional.
    After a second of 11 s, 29 s are left: 2 whole epochs (22 s), then 5 s for the training steps
    of a shorter last epoch with its validation (5 steps of 1 s) -> 18 + 18 + 5 = 41, fixed. The
    run ends where the cosine does (a step of a fifth epoch), not on a guess of whole epochs."""
    from mlic_edge.train.trainer import Trainer
    trainer = Trainer(tiny_recipe(data_root, epochs=30, time_budget=1.0, schedule="cosine", warmup_steps=2),
                      tmp_path / "run", show_progress=False)
    trainer.steps_per_epoch, trainer.validation_s = 9, 2.0

    def epoch_ends_at(seconds: float, steps: int = 9) -> dict | None:
        trainer.epoch += 1
        trainer.global_step += steps
        return trainer._stop_or_replan(seconds)

    assert epoch_ends_at(20.0) is None and (trainer.horizon_steps, trainer.horizon_fixed) == (27, False)
    assert epoch_ends_at(31.0) is None and (trainer.horizon_steps, trainer.horizon_fixed) == (41, True)
    assert epoch_ends_at(42.0) is None and epoch_ends_at(53.0) is None and trainer.horizon_steps == 41
    assert not trainer._cosine_ended() and trainer._cosine_factor(40) > 0
    stopped = epoch_ends_at(60.0, steps=5)          # the fifth epoch, cut at the horizon
    assert trainer._cosine_ended() and trainer._cosine_factor(41) == pytest.approx(0.0, abs=1e-12)
    assert stopped["reason"] == "time budget" and "cosine, sized to it, ended" in stopped["detail"]


class ScriptedClock:
    """The trainer's clock (time.perf_counter in trainer.py) made of scripted seconds: each
    optimizer step takes `step_s`, each epoch's validation `validation_s`, nothing else."""

    def __init__(self, monkeypatch, step_s: float, validation_s: float):
        import types

        import mlic_edge.train.trainer as trainer_module
        from mlic_edge.train.trainer import Trainer
        self.now = 0.0
        monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: self.now))
        step, score_epoch = Trainer._optimizer_step, Trainer._score_epoch

        def timed_step(trainer):
            step(trainer)
            self.now += step_s

        def timed_validation(trainer, progress):
            self.now += validation_s
            return score_epoch(trainer, progress)
        monkeypatch.setattr(Trainer, "_optimizer_step", timed_step)
        monkeypatch.setattr(Trainer, "_score_epoch", timed_validation)


def test_the_last_epoch_is_cut_where_the_cosine_sized_to_the_budget_ends(data_root, tmp_path, monkeypatch, caplog):
    """A 30 s budget, 5 steps of 1 s per epoch, 1.5 s of validation: epochs take 6.5 s. After
    epoch 1 (6.5 s) 23.5 s are left: 3 whole epochs (19.5 s), then 23.5 - 19.5 - 1.5 = 2.5 s for
    the training steps of a shorter last epoch: 2 steps -> horizon 5 + 15 + 2 = 22. After epoch 2
    (13 s): 17 s left, 2 whole epochs, 2.5 s -> 2 steps -> 10 + 10 + 2 = 22 again. So epoch 5 is
    cut after its 2nd step, at the cosine's end (learning rate 0), before the budget is spent."""
    clock = ScriptedClock(monkeypatch, step_s=1.0, validation_s=1.5)
    recipe = tiny_recipe(data_root, epochs=30, time_budget=0.5, schedule="cosine", warmup_steps=2, batch_size=4,
                         max_steps_per_epoch=5, randaugment="", cutout=False)
    caplog.set_level("INFO")
    trainer, result = run(recipe, tmp_path / "run")
    rows = metric_rows(tmp_path / "run")
    epochs, test = rows[:-1], rows[-1]
    assert trainer.steps_per_epoch == 5 and (trainer.horizon_steps, trainer.horizon_fixed) == (22, True)
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in epochs] == [5, 10, 15, 20, 22]            # the last epoch: 2 of 5 steps
    assert "ending it after step 2 of 5" in caplog.text
    assert [r.get("stopped") for r in epochs] == [None] * 4 + ["time budget"]
    assert "cosine, sized to it, ended" in epochs[-1]["stop_detail"] and result["stopped"] == "time budget"
    assert test["epochs_run"] == 5 and trainer.global_step == 22
    assert all(r["lr"] > 1e-5 for r in epochs[:-1]) and epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert clock.now == pytest.approx(22 * 1.0 + 5 * 1.5) and clock.now < 30   # cut by the cosine, not a spent budget


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

    # The test row: best.pt's weights on the whole test split, gathered over both ranks.
    test_row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert test_row["split"] == "test"
    assert independent_test_map(tmp_path / "run" / "best.pt", data_root) == pytest.approx(test_row["mAP"], abs=1e-4)


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


def test_library_train_and_evaluate_return_results(data_root, tmp_path):
    """mlic_edge.train.api: the CLI's options as keywords, result objects back."""
    from mlic_edge.train.api import EvalResult, TrainResult, evaluate, train

    recipe = tiny_recipe(data_root, epochs=1)
    (tmp_path / "recipe.yaml").write_text(recipe.to_yaml())
    result = train(tmp_path / "recipe.yaml", out=tmp_path / "run", show_progress=False, epochs=1, seed=3,
                   set_items=["train.batch_size=6"])
    assert isinstance(result, TrainResult)
    assert result.best_checkpoint == tmp_path / "run" / "best.pt" and result.best_checkpoint.is_file()
    assert result.last_checkpoint.is_file()
    assert (result.recipe.train.seed, result.recipe.train.batch_size) == (3, 6)
    assert result.selected_epoch == 1 and result.stop_reason == "epochs"
    assert result.metrics["split"] == "test" and 0 <= result.metrics["mAP"] <= 100
    scored = evaluate(result.best_checkpoint, data="folder", data_root=data_root, device="cpu", workers=0,
                      json_out=tmp_path / "eval.json")
    assert isinstance(scored, EvalResult) and scored.split == "test" and scored.classes == CLASSES
    assert scored.metrics["mAP"] == pytest.approx(result.metrics["mAP"], abs=1e-4)
    assert scored.json_path == tmp_path / "eval.json" and scored.plot_path.is_file()


def test_cli_maps_an_interrupted_run_to_exit_130(tmp_path, monkeypatch, caplog):
    """The library raises TrainingInterrupted; the CLI says where the state is and exits 130."""
    import mlic_edge.train.api as api
    from mlic_edge.cli import main
    from mlic_edge.train.api import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(f"interrupted: state saved to {tmp_path / 'last.pt'}", tmp_path, 2, 7)

    monkeypatch.setattr(api, "train", interrupted)
    with pytest.raises(SystemExit) as done:
        main(["train", "--out", str(tmp_path)])
    assert done.value.code == 130
    assert f"state saved to {tmp_path / 'last.pt'}" in caplog.text


def test_cli_train_passes_its_options_by_name_and_device_only_when_given(monkeypatch):
    """Without --device the recipe's train.device stands (the option's default is not a value set)."""
    import mlic_edge.train.api as api
    from mlic_edge.cli import main

    calls = []
    monkeypatch.setattr(api, "train", lambda config, **options: calls.append((config, options)))
    for args in ([], ["--device", "cpu"], ["--device", "auto"]):
        with pytest.raises(SystemExit) as done:
            main(["train", "-c", "voc07_r101_448", "--epochs", "3", "--set", "train.seed=2", *args])
        assert done.value.code == 0
    assert [options["device"] for _, options in calls] == [None, "cpu", "auto"]
    config, options = calls[0]
    assert config == "voc07_r101_448" and options["epochs"] == 3 and options["set_items"] == ["train.seed=2"]


def test_library_api_imports_without_torch():
    """mlic_edge.train.api is cheap to import: no torch until a function runs."""
    code = "import sys, mlic_edge.train.api; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]


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
