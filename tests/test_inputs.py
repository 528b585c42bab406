"""Typed, validated inputs: every bad input is one line on stderr, exit code 2, nothing written.

The CLI cases run `python -m mlic_edge` in a subprocess and fail before any training (most before
torch is imported). The unit tests pin the type coercion of recipe values (--set and YAML files).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from PIL import Image

from mlic_edge.config import Recipe, TrainConfig, coerce, parse_override
from mlic_edge.core.errors import ConfigError, DatasetError
from tiny_model import run_cli

REPO = Path(__file__).resolve().parents[1]
HAS_GPU = torch.cuda.is_available()


# ----------------------------------------------------------------------------------- fixtures
def write_folder_dataset(root: Path, classes_txt: bytes | None = None) -> Path:
    """Four 40 px PNGs per split, train.csv / test.csv, labels cat / dog."""
    root.mkdir(parents=True)
    for split in ("train", "test"):
        rows = ["image,labels"]
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), 50 * i, np.uint8)).save(root / f"{split}{i}.png")
            rows.append(f"{split}{i}.png,{'cat' if i % 2 else 'dog'}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    if classes_txt is not None:
        (root / "classes.txt").write_bytes(classes_txt)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A folder dataset, one with a Latin-1 classes.txt, a recipe with a bad value, and
    checkpoints: a good one, one whose config is a list, one naming an unknown backbone."""
    from mlic_edge.checkpoint import save_checkpoint
    from tiny_model import save_random_checkpoint, tiny_config

    base = tmp_path_factory.mktemp("inputs")
    good = save_random_checkpoint(base / "good.pt", tiny_config(num_classes=2))
    ckpt = torch.load(good, map_location="cpu", weights_only=True)
    save_checkpoint(base / "list_config.pt", {**ckpt, "config": [1, 2]})
    save_checkpoint(base / "unknown_backbone.pt", {**ckpt, "config": {**ckpt["config"], "backbone": "resnet10l"}})
    (base / "recipe.yaml").write_text("train:\n  lr: 1e-3\n  epochs: abc\n")
    return {"data": write_folder_dataset(base / "data"),
            "latin1": write_folder_dataset(base / "latin1", classes_txt="dog\nchat\xe9\n".encode("latin-1")),
            "recipe": base / "recipe.yaml", "good": good, "list_config": base / "list_config.pt",
            "unknown_backbone": base / "unknown_backbone.pt"}


# ----------------------------------------------------------------------------------- CLI cases
def train(*args: str, data: str = "data"):
    return lambda p, out: ["train", "--data", "folder", "--data-root", str(p[data]), "--out", str(out), *args]


def evaluate(ckpt: str, *args: str):
    return lambda p, out: ["eval", str(p[ckpt]), "--data", "folder", "--data-root", str(p["data"]),
                           "--json", str(out / "metrics.json"), "--plot", str(out / "ap.png"), *args]


# (id, command, words stderr must contain: the input it names and the problem)
CASES = [
    ("lr-not-a-number", train("--set", "train.lr=fast"), ["--set train.lr=fast", "number"]),
    ("epochs-abc", train("--set", "train.epochs=abc"), ["--set train.epochs=abc: expected an integer"]),
    ("epochs-fraction", train("--set", "train.epochs=2.5"), ["train.epochs", "integer"]),
    ("nhead-zero", train("--set", "model.nhead=0"), ["model.nhead", ">= 1"]),
    ("d_model-not-divisible", train("--set", "model.nhead=3"), ["nhead (3)", "divisible"]),
    ("dropout-range", train("--set", "model.dropout=1.5"), ["model.dropout", "[0, 1)"]),
    ("threshold-range", train("--set", "train.threshold=2"), ["train.threshold", "[0, 1]"]),
    ("encoder-choice", train("--set", "model.encoder=conv"), ["model.encoder", "irpe, standard, none"]),
    ("bool", train("--set", "train.cutout=maybe"), ["train.cutout", "true or false"]),
    ("unknown-key", train("--set", "train.epoch=3"), ["epoch", "did you mean epochs"]),
    ("yaml-syntax", train("--set", "train.loss_args={a"), ["--set train.loss_args={a", "YAML"]),
    ("recipe-file", lambda p, out: ["train", "-c", str(p["recipe"]), "--data", "folder", "--data-root",
                                    str(p["data"]), "--out", str(out)], ["recipe.yaml", "train.epochs"]),
    ("train-device-gpu", train("--device", "gpu"), ["--device 'gpu'", "auto, cpu, cuda or cuda:N"]),
    ("train-device-cuda-x", train("--device", "cuda:x"), ["--device 'cuda:x'", "cuda:N"]),
    ("train-device-cuda-99", train("--device", "cuda:99"), ["--device 'cuda:99'", "torch sees"]),
    ("eval-ap-mode", evaluate("good", "--ap-mode", "vocc"), ["--ap-mode 'vocc'", "noninterp or voc"]),
    ("eval-device-gpu", evaluate("good", "--device", "gpu"), ["--device 'gpu'", "cuda:N"]),
    ("eval-device-cuda-99", evaluate("good", "--device", "cuda:99"), ["--device 'cuda:99'", "torch sees"]),
    ("ckpt-config-not-mapping", evaluate("list_config"), ["list_config.pt", "not a mapping"]),
    ("ckpt-unknown-backbone", evaluate("unknown_backbone"), ["unknown_backbone.pt", "resnet10l", "not a timm model"]),
    ("classes-txt-not-utf8", train(data="latin1"), ["classes.txt", "UTF-8"]),
    ("backbone-misspelt", train("--backbone", "resnet10l", "--pretrained", "auto"),
     ["model.backbone 'resnet10l'", "did you mean", "resnet101"]),
]
if not HAS_GPU:
    CASES += [("train-device-cuda", train("--device", "cuda"), ["--device 'cuda'", "no CUDA GPU"]),
              ("eval-device-cuda", evaluate("good", "--device", "cuda"), ["--device 'cuda'", "no CUDA GPU"])]


@pytest.mark.parametrize("command,words", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(inputs, tmp_path, command, words):
    out = tmp_path / "out"
    proc = run_cli(*command(inputs, out))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("verb", ["train", "eval"])
@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_malformed_device_is_one_line_before_torch_is_imported(tmp_path, verb, device):
    """train and eval read --device with the one parser (core.devices, training's kinds): a
    malformed value is one line, exit 2, before anything heavy is imported or any file read."""
    args = {"train": ["train", "--out", str(tmp_path / "out")],
            "eval": ["eval", str(tmp_path / "missing.pt"), "--data", "digits"]}[verb] + ["--device", device]
    code = (f"import sys\nfrom mlic_edge.cli import main\ntry:\n    main({args!r})\nfinally:\n"
            f"    assert 'torch' not in sys.modules, 'torch was imported'")
    environ = {k: v for k, v in os.environ.items() if k != "MLIC_EDGE_VERBOSE"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: --device {device!r}: unknown device; expected auto, cpu, cuda or cuda:N"
    assert not (tmp_path / "out").exists()


def test_verbose_env_shows_the_traceback_of_a_one_line_error(tmp_path):
    proc = run_cli("train", "--set", "train.epochs=abc", "--out", str(tmp_path / "out"), MLIC_EDGE_VERBOSE="1")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --set train.epochs=abc: expected an integer"


def test_help_documents_the_verbose_env():
    assert "MLIC_EDGE_VERBOSE" in run_cli("--help").stdout


# ----------------------------------------------------------------------------------- coercion
@pytest.mark.parametrize("text,value", [("1e-3", 0.001), ("1E-3", 0.001), ("5", 5.0), ("2.5e-4", 2.5e-4),
                                        (".5", 0.5), ("-1e-2", -0.01)])
def test_float_fields_take_every_way_of_writing_a_number(text, value):
    key, parsed = parse_override(f"train.weight_decay={text}")
    assert key == "train.weight_decay"
    assert type(parsed) is float and parsed == pytest.approx(value)


def test_lr_1e_3_from_set_and_from_a_recipe_file_is_a_float(tmp_path):
    recipe = Recipe().with_overrides(["train.lr=1e-3"])
    assert type(recipe.train.lr) is float and recipe.train.lr == 0.001
    (tmp_path / "r.yaml").write_text("train:\n  lr: 1e-3\n  betas: [0.9, 9.99e-1]\n  loss_args: {eps: 1e-8}\n")
    loaded = Recipe.load(tmp_path / "r.yaml").train
    assert type(loaded.lr) is float and loaded.lr == 0.001
    assert loaded.betas == (0.9, 0.999) and loaded.loss_args == {"eps": 1e-8}


@pytest.mark.parametrize("item,message", [
    ("train.epochs=abc", "--set train.epochs=abc: expected an integer"),
    ("train.epochs=2.5", "--set train.epochs=2.5: expected an integer"),
    ("train.epochs=true", "--set train.epochs=true: expected an integer"),
    ("train.lr=abc", "--set train.lr=abc: expected a finite number"),
    ("train.lr=.nan", "--set train.lr=.nan: expected a finite number"),
    ("train.cutout=1", "--set train.cutout=1: expected true or false"),
    ("model.encoder=conv", "--set model.encoder=conv: expected one of irpe, standard, none"),
    ("train.betas=[0.9]", "--set train.betas=[0.9]: expected a list of 2 finite numbers"),
    ("train.loss_args=[1]",
     "--set train.loss_args=[1]: expected a mapping of names to true or false or finite numbers"),
    ("train.epochs", "--set train.epochs: expected section.key=value"),
    ("train.epoch=3", "--set train.epoch=3: train: unknown key epoch (did you mean epochs?)"),
])
def test_wrong_types_name_the_key_and_the_expected_type(item, message):
    with pytest.raises(ConfigError) as info:
        parse_override(item)
    assert str(info.value) == message


def test_ints_bools_and_strings_keep_their_type():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("train.epochs=1e3") == ("train.epochs", 1000)     # an integer written as a float
    assert parse_override("train.cutout=false") == ("train.cutout", False)
    assert parse_override("train.amp=off") == ("train.amp", "off")          # not YAML 1.1's false
    assert parse_override("data.root=2024") == ("data.root", "2024")        # a folder, not a number
    assert parse_override("train.randaugment=") == ("train.randaugment", "")
    assert parse_override("train.loss_args={gamma_neg: 3, detach_focusing: true}") == \
        ("train.loss_args", {"gamma_neg": 3.0, "detach_focusing": True})


def test_optional_fields_accept_null():
    assert coerce(Optional[float], None) is None
    assert coerce(Optional[float], "1e-3") == 0.001
    assert coerce(int | None, 4) == 4
    with pytest.raises(Exception, match="an integer or null"):
        coerce(int | None, "x")


def test_recipe_file_errors_name_the_file_and_the_key(tmp_path):
    (tmp_path / "r.yaml").write_text("model:\n  image_size: big\n")
    with pytest.raises(ConfigError, match=r"r.yaml: model.image_size: expected an integer, got 'big'"):
        Recipe.load(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("train:\n  amp: off\n")
    with pytest.raises(ConfigError, match="train.amp: expected one of auto, bf16, fp16, off, got false"):
        Recipe.load(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("model: 3\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        Recipe.load(tmp_path / "r.yaml")


@pytest.mark.parametrize("values,message", [
    ({"model.nhead": 0}, "model.nhead must be >= 1"),
    ({"model.nhead": 3}, "model.d_model (2048) must be divisible by nhead (3)"),
    ({"model.image_size": 16}, "model.image_size must be >= 32"),
    ({"model.dropout": 1.0}, "model.dropout must be in [0, 1)"),
    ({"model.dim_feedforward": 0}, "model.dim_feedforward must be >= 1"),
    ({"train.epochs": 0}, "train.epochs must be >= 1"),
    ({"train.batch_size": 0}, "train.batch_size must be >= 1"),
    ({"train.lr": 0}, "train.lr must be > 0"),
    ({"train.threshold": 1.5}, "train.threshold must be in [0, 1]"),
    ({"train.pct_start": 1}, "train.pct_start must be in (0, 1)"),
    ({"train.betas": [0.9, 1.0]}, "train.betas must both be in [0, 1)"),
    ({"train.device": "gpu"}, "train.device 'gpu': unknown device"),
    ({"data.workers": -1}, "data.workers must be >= 0"),
])
def test_ranges_and_relations_are_checked(values, message):
    with pytest.raises(ConfigError) as info:
        Recipe().with_values(values)
    assert str(info.value).startswith(message)


def test_replace_checks_types_too():
    assert TrainConfig().replace(lr=1).lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        TrainConfig().replace(epochs="many")


RECIPES = sorted(REPO.glob("mlic_edge/configs/**/*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_the_repos_own_recipes_still_load(path):
    from mlic_edge.model import check_backbone_name

    recipe = Recipe.load(path)
    assert type(recipe.train.lr) is float and recipe.train.lr > 0
    check_backbone_name(recipe.model.backbone)


def test_shipped_recipes_are_found_by_name_and_a_path_still_works(tmp_path):
    from mlic_edge.config import SHIPPED_RECIPES, recipe_path, shipped_recipe_names

    names = shipped_recipe_names()
    assert "voc07_r101_448" in names and "ablations/coco_r101_448_loss_bce" in names
    assert recipe_path("voc07_r101_448") == SHIPPED_RECIPES / "voc07_r101_448.yaml"
    assert recipe_path("configs/voc07_r101_448.yaml") == SHIPPED_RECIPES / "voc07_r101_448.yaml"
    voc = Recipe.load("voc07_r101_448")
    assert voc.data.name == "voc2007" and voc.model.backbone.startswith("resnet101")   # the rest from its base
    bce = Recipe.load("ablations/coco_r101_448_loss_bce")
    assert bce.train.loss == "bce" and bce.to_dict()["model"] == Recipe.load("coco_r101_448").to_dict()["model"]
    own = tmp_path / "voc07_r101_448.yaml"      # a file wins over the shipped name it shadows
    own.write_text("train:\n  epochs: 3\n")
    assert Recipe.load(own).train.epochs == 3
    with pytest.raises(ConfigError) as info:
        Recipe.load("voc07_r101")
    message = str(info.value)
    assert "\n" not in message and message.startswith("voc07_r101: no such recipe file or shipped recipe; shipped: ")
    assert all(name in message for name in names)


# ----------------------------------------------------------------------------------- backbone, data, bench
def test_unknown_backbone_is_a_config_error_with_close_names():
    from mlic_edge.model import check_backbone_name

    check_backbone_name("test_resnet")
    check_backbone_name("resnet101.tv_in1k")
    with pytest.raises(ConfigError, match=r"'resnet10l': not a timm model \(did you mean .*resnet101"):
        check_backbone_name("resnet10l")
    with pytest.raises(ConfigError, match="no weights tagged 'tv_in2k'.*tv_in1k"):
        check_backbone_name("resnet101.tv_in2k")


def test_pretrained_auto_does_not_fall_back_to_random_weights_for_a_misspelt_backbone():
    from mlic_edge.model import create_timm_model

    with pytest.raises(ConfigError, match="not a timm model"):
        create_timm_model("resnet10l", "auto")


def test_folder_dataset_reads_only_the_split_files(tmp_path):
    from mlic_edge.data import build_dataset

    root = write_folder_dataset(tmp_path / "d")
    (root / "preds.csv").write_text("image,cat,dog\ntrain0.png,0.1,0.9\n")
    (root / "notes.csv").write_text("image,labels\ntrain0.png,bird\n")
    assert build_dataset("folder", root, "train").classes == ["cat", "dog"]
    assert build_dataset("folder", root, "test").classes == ["cat", "dog"]
    (root / "extra.csv").write_text("image,labels\ntrain0.png,fox\n")   # a split read by name
    assert build_dataset("folder", root, "extra").classes == ["cat", "dog", "fox"]


def test_classes_txt_not_utf8_names_the_file(tmp_path):
    from mlic_edge.data import build_dataset

    root = write_folder_dataset(tmp_path / "d", classes_txt=b"dog\ncat\xe9\n")
    with pytest.raises(DatasetError, match=r"classes.txt: not UTF-8 text \(byte 0xe9 at offset 7\)"):
        build_dataset("folder", root, "train")


class FakeBackend:
    """Enough of runtime.base.Backend for run_bench; `fail` makes predict raise."""

    def __init__(self, path, kind: str, fail: bool = False):
        from types import SimpleNamespace

        self.path, self.kind, self.fail, self.closed = path, kind, fail, False
        self.device, self.precision, self.image_size, self.batch_range = "cpu", "fp32", 8, None
        self.timer_kind, self.metadata = "perf_counter", SimpleNamespace(source_sha256=None)

    def predict(self, images):
        if self.fail:
            raise RuntimeError("device lost")

    def timer(self):
        from types import SimpleNamespace

        return SimpleNamespace(start=lambda: None, stop=lambda: 1.0)

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("fails", ["reference", "reference-kind"])
def test_bench_closes_its_backends_when_it_fails_half_way(monkeypatch, tmp_path, fails):
    from mlic_edge.runtime import bench

    opened = []

    def open_backend(path, device="auto"):
        kind = "onnxruntime" if path.suffix == ".onnx" else ("onnxruntime" if fails == "reference-kind" else "torch")
        opened.append(FakeBackend(path, kind, fail=fails == "reference" and path.suffix == ".pt"))
        return opened[-1]

    monkeypatch.setattr(bench, "open_backend", open_backend)
    with pytest.raises((RuntimeError, ConfigError)):
        bench.run_bench(tmp_path / "m.onnx", batches=[1], warmup=0, repeats=1, reference=tmp_path / "m.pt")
    assert len(opened) == 2 and all(b.closed for b in opened)
