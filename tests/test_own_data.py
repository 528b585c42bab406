"""Own data: model presets, the recipe derived from the data, the split check, the memory check."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from tiny_model import make_folder_dataset, run, tiny_recipe
from tiny_model import one_thread

from mlic_edge.config import Recipe
from mlic_edge.model.presets import DEFAULT_PRESET, PRESETS, get_preset
from mlic_edge.train.auto_recipe import (
    MAX_EPOCHS,
    MIN_EPOCHS,
    PATIENCE,
    TIME_BUDGET,
    derive_recipe,
    median_image_side,
)


# ----------------------------------------------------------------------------------- presets
def test_presets_are_complete_and_one_is_the_paper():
    assert DEFAULT_PRESET in PRESETS
    paper = PRESETS["r101-448"].config()
    defaults = Recipe().model
    for field in ("backbone", "image_size", "d_model", "nhead", "dim_feedforward", "enc_layers", "dec_layers",
                  "encoder", "decoder_self_attn", "irpe_ratio"):
        assert getattr(paper, field) == getattr(defaults, field), field
    for name in ("lite0-224", "lite1-240", "lite2-260"):
        cfg = PRESETS[name].config()
        assert cfg.backbone == f"tf_efficientnet_{name[:5]}" and cfg.image_size == int(name[-3:])
    with pytest.raises(Exception, match="unknown model 'huge'"):
        get_preset("huge")


def heavy(name: str) -> bool:
    """The ResNet101 presets: seconds of CPU per pass at 448 px and more (marked slow)."""
    return PRESETS[name].model["backbone"].startswith("resnet101")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if heavy(n) else n for n in PRESETS])
def test_every_preset_trains_a_step_and_exports(name, tmp_path):
    """Forward, backward and an fp32 ONNX export of every preset; the graph is run here with ONNX
    Runtime and compared with the PyTorch model's logits on the same images (not with the
    exporter's own error report)."""
    import onnxruntime as ort

    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.export import export_onnx
    from mlic_edge.model import build_model

    cfg = PRESETS[name].config(num_classes=5).replace(pretrained="none")
    torch.manual_seed(0)
    model = build_model(cfg)
    images = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with one_thread():
        logits = model(torch.randn(2, 3, cfg.image_size, cfg.image_size))
        assert logits.shape == (2, 5)
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        with torch.no_grad():
            want = model.eval()(images).numpy()
        ckpt = tmp_path / f"{name}.pt"
        save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": list("abcde"),
                               "preprocess": model.data_config(), "thresholds": [0.5] * 5})
        del model, logits
        export_onnx(ckpt, tmp_path / f"{name}.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {session.get_inputs()[0].name: images.numpy()})[0]
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
    assert not np.allclose(want[0], want[1])   # the images differ: a constant graph would not pass


# ----------------------------------------------------------------------------------- recipe rule
def test_recipe_rule_at_its_boundaries():
    lite0 = get_preset("lite0-224")
    tiny = derive_recipe(Recipe(), lite0, num_train=10, image_side=48)
    assert tiny.recipe.train.epochs == MAX_EPOCHS                  # few images: many epochs, capped
    assert tiny.recipe.model.image_size == 96                      # 48 px: 64 at least, x 1.25 up to 32s
    assert tiny.recipe.train.pct_start == 0.3                      # 100 warm-up steps of 30: capped
    assert tiny.recipe.train.ema_decay == 0.9                      # a 6-step window: clamped
    assert tiny.recipe.train.randaugment.startswith("rand-m9") and tiny.recipe.train.cutout
    large = derive_recipe(Recipe(), lite0, num_train=1_000_000, image_side=640)
    assert large.planned_epochs == MIN_EPOCHS
    assert large.recipe.model.image_size == 224                    # the preset's size when the data is larger
    assert large.recipe.train.ema_decay == 0.9999
    # validation images (the hold-out) and no epochs given: the run stops by the rule, and the
    # images-seen epochs only size the warm-up (a share of them, as one-cycle's), EMA and augmentation
    steps = 3 * 28_125                                           # 900,000 images trained on, batch 32
    assert (large.recipe.train.epochs, large.recipe.train.schedule) == (MAX_EPOCHS, "cosine")
    assert (large.recipe.train.patience, large.recipe.train.time_budget) == (PATIENCE, TIME_BUDGET)
    assert large.recipe.train.warmup_steps == round(0.1 * steps)
    assert tiny.recipe.train.schedule == "onecycle" and tiny.recipe.train.patience == 0   # nothing to stop on
    assert large.recipe.train.randaugment.startswith("rand-m5") and not large.recipe.train.cutout
    mid = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128)
    # 128 px upsampled to 160: 12,000 x (128/160)^2 = 7,680 images seen = 2.56 epochs, at least 3
    assert (mid.planned_epochs, mid.recipe.model.image_size, mid.recipe.train.lr) == (3, 160, 1e-3)
    study = derive_recipe(Recipe(), lite0, num_train=1000, image_side=128)
    assert (study.planned_epochs, study.recipe.model.image_size) == (8, 160)   # 7.68 epochs
    near = derive_recipe(Recipe(), lite0, num_train=3000, image_side=200)
    assert (near.planned_epochs, near.recipe.model.image_size) == (4, 224)     # no more than the preset's
    given = derive_recipe(Recipe(), lite0, num_train=1000, image_side=128, image_size=224)
    assert (given.planned_epochs, given.recipe.model.image_size) == (4, 224)   # 12 x (128/224)^2 = 3.9
    own = derive_recipe(Recipe(), lite0, num_train=1000, image_side=128, image_size=128)
    assert (own.planned_epochs, own.recipe.model.image_size) == (12, 128)      # the rule before #13's study
    assert mid.recipe.train.threshold_holdout == 0.1 and tiny.recipe.train.threshold_holdout == 0.0
    assert mid.recipe.model.backbone == "tf_efficientnet_lite0" and mid.recipe.model.d_model == 256
    paper = derive_recipe(Recipe(), get_preset("r101-448"), num_train=3000, image_side=None)
    assert paper.recipe.train.lr == 1.25e-4 and paper.recipe.model.image_size == 448
    block = mid.describe()
    for setting in ("model", "image_size", "epochs", "patience", "time", "lr", "warmup", "ema_decay",
                    "augmentation", "selection"):
        assert f"  {setting} " in block
    assert "  pct_start " in tiny.describe() and "  stop " in tiny.describe()
    with_val = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128, validation="d/val.csv")
    assert with_val.recipe.train.threshold_holdout == 0.0 and "d/val.csv" in with_val.describe()


def block_rows(derived) -> dict[str, tuple[str, str]]:
    return {setting: (value, why) for setting, value, why in derived.reasons}


def test_values_set_by_the_user_are_marked_and_what_follows_is_derived_again():
    """--epochs 5 on 3,000 images of 128 px: the block says 5 epochs set by the user, and the
    warm-up and EMA window are those of 5 epochs (hand-computed here), not the rule's 3."""
    lite0 = get_preset("lite0-224")
    rule = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128)
    assert rule.planned_epochs == 3 and rule.recipe.train.epochs == MAX_EPOCHS   # stops by the rule
    five = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128,
                         given={"train.epochs": 5, "train.batch_size": 16, "train.seed": 7})
    rows = block_rows(five)
    assert rows["epochs"] == ("5", "set by the user") and rows["batch_size"] == ("16", "set by the user")
    assert rows["seed"] == ("7", "set by the user")
    # 3,000 images - 300 held out = 2,700 trained on; batch 16 -> 169 steps per epoch; 5 epochs
    steps = 5 * 169
    assert five.recipe.train.pct_start == pytest.approx(round(100 / steps, 4))
    assert five.recipe.train.ema_decay == pytest.approx(round(1 - 1 / (steps / 5), 6))
    assert f"100 warm-up steps of {steps} " in rows["pct_start"][1] and f"run's {steps})" in rows["ema_decay"][1]
    assert (five.recipe.train.epochs, five.recipe.train.batch_size, five.recipe.train.seed) == (5, 16, 7)
    # the user's epochs win: one-cycle over them, no early stop and no budget unless asked
    assert (five.recipe.train.schedule, five.recipe.train.patience, five.recipe.train.time_budget) == ("onecycle", 0, 0)
    assert "patience" not in rows and "time" not in rows
    asked = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128,
                          given={"train.epochs": 5, "train.patience": 2, "train.time_budget": 1.5})
    assert (asked.recipe.train.epochs, asked.recipe.train.patience, asked.recipe.train.time_budget) == (5, 2, 1.5)
    assert block_rows(asked)["patience"] == ("2", "set by the user") and block_rows(asked)["time"][1] == "set by the user"
    # the rule's stop, with the user's budget (--time): marked, the rest of the rule kept
    timed = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128, given={"train.time_budget": 2.0})
    assert (timed.recipe.train.time_budget, timed.recipe.train.patience, timed.recipe.train.schedule) == (2.0, PATIENCE, "cosine")
    assert block_rows(timed)["time"][1] == "set by the user" and block_rows(rule)["time"] == (f"{TIME_BUDGET:g} min", block_rows(rule)["time"][1])
    # 30 epochs set by the user switch the augmentation to the paper's, and the block says so
    thirty = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128, given={"train.epochs": 30})
    assert thirty.recipe.train.cutout and block_rows(thirty)["augmentation"][0] == "m9 + cutout"
    # a value the rule derives, when set, is the user's and not re-derived
    set_ema = derive_recipe(Recipe(), lite0, num_train=3000, image_side=128, given={"train.ema_decay": 0.5})
    assert set_ema.recipe.train.ema_decay == 0.5 and block_rows(set_ema)["ema_decay"] == ("0.5", "set by the user")


def test_median_image_side_reads_headers(tmp_path):
    root = make_folder_dataset(tmp_path / "d")
    assert median_image_side(sorted((root / "img").glob("*.png"))) == 48
    assert median_image_side([]) is None


def test_train_on_own_data_derives_and_records_the_recipe(tmp_path, capsys):
    """`train --data folder` without a recipe: the block is printed and recipe.yaml carries it;
    options given on the command line still win."""
    from mlic_edge.cli import main

    root = make_folder_dataset(tmp_path / "d", n_train=16, n_test=8)
    out = tmp_path / "run"
    with one_thread(), pytest.raises(SystemExit) as done:
        main(["train", "--data", "folder", "--data-root", str(root), "--epochs", "1", "--time", "5", "--workers", "0",
              "--pretrained", "none", "--device", "cpu", "--set", "train.max_steps_per_epoch=1", "--out", str(out)])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "recipe derived from the model preset and the data" in printed and "lite0-224" in printed
    text = (out / "recipe.yaml").read_text()
    assert text.startswith("# recipe derived") and "image_size" in text.split("\n", 1)[1]
    recipe = Recipe.from_yaml(text)
    assert recipe.model.backbone == "tf_efficientnet_lite0" and recipe.model.image_size == 96
    assert recipe.train.epochs == 1                                # the command line's value won
    assert (recipe.train.schedule, recipe.train.patience, recipe.train.time_budget) == ("onecycle", 0, 5.0)
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("#   ")}
    assert rows["epochs"].endswith("set by the user") and rows["device"].endswith("set by the user")
    assert rows["time"].endswith("set by the user")
    assert "100 warm-up steps of 1 (1 epochs x 1 steps)" in rows["pct_start"]   # max_steps_per_epoch=1
    assert rows["max_steps_per_epoch"].endswith("set by the user") and recipe.train.max_steps_per_epoch == 1
    assert (out / "best.pt").is_file()


def test_resolve_recipe_decides_where_the_recipe_comes_from(tmp_path):
    """train.recipes.resolve_recipe: own data derives (notes say why), a recipe file or shipped name
    is used as it is (a preset then replaces only its model), the caller's values win."""
    from mlic_edge.train.recipes import resolve_recipe

    root = make_folder_dataset(tmp_path / "d", n_train=16, n_test=8)
    derived = resolve_recipe(data="folder", data_root=root, epochs=2, set_items=["train.seed=4"])
    assert derived.notes.startswith("recipe derived from the model preset and the data")
    assert derived.recipe.model.backbone == "tf_efficientnet_lite0" and derived.recipe.data.root == str(root)
    assert (derived.recipe.train.epochs, derived.recipe.train.seed) == (2, 4)
    assert derived.user_set == {"train.epochs": 2, "train.seed": 4}

    shipped = resolve_recipe("voc07_r101_448", data_root=root, batch_size=4)
    assert shipped.notes == "" and shipped.recipe.train.batch_size == 4
    assert shipped.recipe.to_dict()["train"] == {**Recipe.load("voc07_r101_448").to_dict()["train"], "batch_size": 4}
    with_preset = resolve_recipe("voc07_r101_448", preset="lite0-224")
    assert with_preset.notes == "" and with_preset.recipe.model.backbone == "tf_efficientnet_lite0"
    assert with_preset.recipe.train == Recipe.load("voc07_r101_448").train

    defaults = resolve_recipe()
    assert defaults.recipe == Recipe() and defaults.notes == ""
    resumed = resolve_recipe(data="folder", data_root=root, resume=True)   # the run keeps its own recipe
    assert resumed.notes == "" and resumed.recipe.model == Recipe().model
    with pytest.raises(TypeError, match="unknown option"):
        resolve_recipe(epoch=3)


# ----------------------------------------------------------------------------------- split check
def test_split_check_names_shared_images_and_empty_classes(tmp_path):
    from mlic_edge.data import build_dataset
    from mlic_edge.data.split_check import split_warnings

    root = make_folder_dataset(tmp_path / "d", n_train=12, n_test=6)
    clean = split_warnings(build_dataset("folder", root, "train"), build_dataset("folder", root, "test"))
    assert not any("also in the training split" in w for w in clean)
    shutil.copy(root / "img" / "train003.png", root / "img" / "test002.png")    # a leaked image
    lines = (root / "test.csv").read_text().splitlines()
    lines = [lines[0]] + [f"{line.split(',')[0]},red" for line in lines[1:]]      # no green/blue in test
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    warnings = split_warnings(build_dataset("folder", root, "train"), build_dataset("folder", root, "test"))
    shared = [w for w in warnings if "also in the training split" in w]
    assert len(shared) == 1 and "train003.png = test002.png" in shared[0] and shared[0].startswith("1 test image")
    empty = [w for w in warnings if "no positive image in the test split" in w]
    assert len(empty) == 1 and "blue" in empty[0] and "green" in empty[0]


def test_a_test_image_in_what_becomes_the_hold_out_is_flagged(tmp_path, caplog):
    """The trainer checks the whole training split, before the hold-out is taken from it: a test
    image copied into a training file that the seeded hold-out then takes is still named."""
    from mlic_edge.train.trainer import Trainer, build_splits

    root = make_folder_dataset(tmp_path / "d")
    recipe = tiny_recipe(root, epochs=1)
    _, _, _, holdout = build_splits(recipe)                   # the seeded draw, before any copy
    held_out = holdout.samples[0][0]
    shutil.copy(root / "img" / "test004.png", held_out)
    caplog.set_level("WARNING")
    trainer = Trainer(recipe, tmp_path / "run", show_progress=False)
    assert held_out in [path for path, _ in trainer.holdout_set.samples]
    assert held_out not in [path for path, _ in trainer.train_set.samples]
    shared = [r.getMessage() for r in caplog.records if "also in the training split" in r.getMessage()]
    assert len(shared) == 1 and f"{held_out.name} = test004.png" in shared[0]


# ----------------------------------------------------------------------------------- memory check
def test_batch_that_does_not_fit_is_split_with_accumulation(tmp_path, monkeypatch, caplog):
    from mlic_edge.model import build_model
    from mlic_edge.train.memory import plan_memory, split_batch
    from mlic_edge.train.trainer import Trainer

    root = make_folder_dataset(tmp_path / "d")
    recipe = tiny_recipe(root, batch_size=8, epochs=1, max_steps_per_epoch=1)
    model = build_model(recipe.model.replace(num_classes=3))
    probe = plan_memory(model, 64, 8, 1, torch.device("cpu"), ema=True)
    assert 0 < probe.per_image < probe.fixed       # tiny images: activations far below the weights' state
    assert probe.batch_size == 8 and probe.grad_accum == 1                    # fits this machine
    limit = int((probe.fixed + 3.5 * probe.per_image) / 0.85)                # room for 3 images
    monkeypatch.setenv("MLIC_EDGE_MEMORY_LIMIT", str(limit))
    with one_thread():
        trainer = Trainer(recipe, tmp_path / "run", show_progress=False)
    assert (trainer.recipe.train.batch_size, trainer.recipe.train.grad_accum) == (2, 4)
    assert "training with batch 2 x 4 accumulation steps (effective batch 8, as the recipe asks)" in caplog.text
    saved = Recipe.from_yaml((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved.train.batch_size == 2 and saved.train.grad_accum == 4
    assert split_batch(32, 11) == (8, 4) and split_batch(31, 30) == (16, 2) and split_batch(9, 3) == (3, 3)


def test_configuration_too_large_is_a_one_line_error_before_training(tmp_path, monkeypatch, capsys):
    from mlic_edge.cli import main

    root = make_folder_dataset(tmp_path / "d")
    monkeypatch.setenv("MLIC_EDGE_MEMORY_LIMIT", "1M")
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", "folder", "--data-root", str(root), "--pretrained", "none", "--workers", "0",
              "--device", "cpu", "--out", str(tmp_path / "run")])
    assert done.value.code == 2
    output = capsys.readouterr()
    lines = [line for line in output.err.splitlines() if line.strip()]
    assert "Traceback" not in output.err and len(lines) == 1
    assert "to train on even one image" in lines[0] and "--image-size 48" in lines[0]   # half the derived 96 px
    assert not (tmp_path / "run" / "last.pt").exists()


def test_memory_probe_leaves_the_model_as_it_was():
    from mlic_edge.model import build_model
    from mlic_edge.train.memory import parse_size, saved_bytes_per_image

    model = build_model(Recipe().model.replace(backbone="test_resnet", pretrained="none", image_size=64,
                                               d_model=32, nhead=4, dim_feedforward=64, num_classes=3)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert saved_bytes_per_image(model, 64, torch.device("cpu")) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and not model.training
    assert parse_size("2G") == 2 << 30 and parse_size("512M") == 512 << 20 and parse_size("1000") == 1000
    np.testing.assert_equal(parse_size("1.5GiB"), int(1.5 * (1 << 30)))


# ----------------------------------------------------------------------------------- thresholds
def test_f1_optimal_thresholds_beat_the_global_one_on_held_out_data():
    """Classes whose scores sit at different heights: per-class thresholds picked on one half
    raise CF1 on the other half over the global 0.5."""
    from mlic_edge.metrics import f1_optimal_thresholds, multilabel_prf

    rng = np.random.default_rng(0)
    n, shifts = 2000, np.array([-2.5, -1.0, 0.0, 1.5])       # calibration differs per class
    targets = (rng.random((n, 4)) < 0.3).astype(np.float32)
    logits = 3.0 * (targets - 0.5) + shifts + rng.normal(0, 1.2, (n, 4))
    scores = 1 / (1 + np.exp(-logits))
    pick, held = slice(0, n // 2), slice(n // 2, n)
    thresholds = f1_optimal_thresholds(scores[pick], targets[pick])
    assert thresholds.shape == (4,) and thresholds[0] < 0.5 < thresholds[3]
    global_cf1 = multilabel_prf(scores[held], targets[held], 0.5)["CF1"]
    per_class_cf1 = multilabel_prf(scores[held], targets[held], thresholds)["CF1"]
    assert per_class_cf1 > global_cf1 + 2, (per_class_cf1, global_cf1)
    empty = f1_optimal_thresholds(scores[:10], np.zeros((10, 4)), default=0.42)
    assert (empty == 0.42).all()                                # no positive: the default stays


def test_training_picks_thresholds_on_held_out_images(tmp_path):
    """threshold_holdout: the held-out images leave the training split, best.pt carries per-class
    thresholds, and the best metrics hold CF1 at both thresholds."""

    from mlic_edge.checkpoint import load_checkpoint

    root = make_folder_dataset(tmp_path / "d", n_train=40, n_test=12)
    recipe = tiny_recipe(root, epochs=2, threshold_holdout=0.25, randaugment="", cutout=False)
    with one_thread():
        trainer, best = run(recipe, tmp_path / "run")
    assert len(trainer.train_set) == 30 and len(trainer.holdout_set) == 10
    held = {p for p, _ in trainer.holdout_set.samples}
    assert held.isdisjoint(p for p, _ in trainer.train_set.samples)
    assert best["per_class_thresholds"]["fitted_on"].startswith("hold-out (10 of")
    assert "CF1" in best["per_class_thresholds"]
    thresholds = load_checkpoint(tmp_path / "run" / "best.pt")["thresholds"]
    assert len(thresholds) == 3 and thresholds != [0.5, 0.5, 0.5]
    from mlic_edge.cli import main  # eval: both sets of CP..OF1
    with one_thread(), pytest.raises(SystemExit) as done:
        main(["eval", str(tmp_path / "run" / "best.pt"), "--data", "folder", "--data-root", str(root),
              "--workers", "0", "--device", "cpu", "--json", str(tmp_path / "eval.json")])
    assert done.value.code in (0, None)
    import json
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert set(metrics["per_class_thresholds"]) == {"CP", "CR", "CF1", "OP", "OR", "OF1"} and "CF1" in metrics
