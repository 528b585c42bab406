"""The tiny model the export, parity, engine and calibration tests share: a synthetic multi-label
task (coloured squares, 6 classes), a timm test_resnet iRPE model trained for 50 steps on it, and
its fp32 / fp16 / int8 (TensorRT and CPU) exports. conftest.py serves it as the session fixture
`trained`; the helpers are imported by the tests that need them (`from tiny_model import ...`).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlic_edge.checkpoint import save_checkpoint
from mlic_edge.config import ModelConfig, Recipe
from mlic_edge.export import export_onnx
from mlic_edge.model import build_model

REPO = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = ["red_top", "green_top", "blue_top", "red_bottom", "green_bottom", "blue_bottom"]
COLOURS = np.array([(200, 60, 60), (60, 170, 60), (70, 80, 210)], np.float32)
TRAIN_STEPS = 50


def tiny_config(**overrides) -> ModelConfig:
    base = dict(num_classes=5, backbone="test_resnet", pretrained="none", image_size=64, d_model=32,
                nhead=4, dim_feedforward=64, dropout=0.0)
    return ModelConfig(**{**base, **overrides})


def preprocess_spec() -> dict:
    return {"image_size": 64, "resize": "squash", "mean": list(MEAN), "std": list(STD),
            "interpolation": "bilinear"}


def save_random_checkpoint(path: Path, cfg: ModelConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # non-zero iRPE tables, so the position terms are exercised
        for name, p in model.named_parameters():
            if ".irpe." in name:
                p.normal_(0, 0.2)
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "classes": [f"c{k}" for k in range(cfg.num_classes)],
                           "preprocess": preprocess_spec(),
                           "thresholds": [0.5] * cfg.num_classes})
    return path


# ----------------------------------------------------------------------------------- trained fixture
def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coloured 10 px squares on noise; class = colour x (top | bottom half)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, 64, 64, 3), np.uint8)
    targets = np.zeros((n, 6), np.float32)
    for i in range(n):
        image = rng.normal(120, 35, (64, 64, 3))
        labels = rng.random(6) < 0.3
        for k in np.flatnonzero(labels):
            colour, half = k % 3, k // 3
            y, x = rng.integers(0, 22) + 32 * half, rng.integers(0, 54)
            image[y:y + 10, x:x + 10] = COLOURS[colour] + rng.normal(0, 15, 3)
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
        targets[i] = labels
    return images, targets


def _write_folder_dataset(root: Path) -> None:
    from PIL import Image

    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split, n, seed in (("train", 256, 0), ("test", 128, 1)):
        images, targets = _synthetic(n, seed)
        (root / split).mkdir()
        lines = ["image,labels"]
        for i, (image, target) in enumerate(zip(images, targets)):
            name = f"{split}/{i:04d}.png"
            Image.fromarray(image).save(root / name)
            lines.append(f"{name},{';'.join(CLASSES[k] for k in np.flatnonzero(target))}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def _load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from mlic_edge.data import build_dataset
    from mlic_edge.data.transforms import build_transform

    dataset = build_dataset("folder", root, split, build_transform(preprocess_spec(), train=False))
    items = [dataset[i] for i in range(len(dataset))]
    return (torch.stack([x for x, _ in items]).numpy(), torch.stack([y for _, y in items]).numpy())


@contextlib.contextmanager
def one_thread():
    """torch and ONNX Runtime on one thread: on a shared 2-core machine a 2-thread tiny model
    slows down 20x as soon as another process takes a core."""
    threads, env = torch.get_num_threads(), os.environ.get("MLIC_EDGE_ORT_THREADS")
    torch.set_num_threads(1)
    os.environ["MLIC_EDGE_ORT_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("MLIC_EDGE_ORT_THREADS", None)
        else:
            os.environ["MLIC_EDGE_ORT_THREADS"] = env


def build_trained_fixture(base: Path) -> dict:
    """Train a tiny iRPE model on the synthetic task, export fp32/fp16/int8 (both targets).

    Idempotent per `base` (the session's temp root): conftest's `trained` fixture builds it once.
    """
    base = Path(base) / "trained-fixture"
    manifest = base / "manifest.json"
    if manifest.is_file():
        return {k: Path(v) for k, v in json.loads(manifest.read_text()).items()}
    with one_thread():
        return _build_trained_fixture(base, manifest)


def _build_trained_fixture(base: Path, manifest: Path) -> dict:
    data_root = base / "data"
    _write_folder_dataset(data_root)
    x_train, y_train = _load_split(data_root, "train")

    cfg = tiny_config(num_classes=6, encoder="irpe", decoder_self_attn="none")
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(0, len(x), (32,), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ckpt = base / "trained.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES,
                           "preprocess": preprocess_spec(), "thresholds": [0.5] * 6})

    calib_dir = data_root / "train"  # a plain folder of PNGs
    cache = base / "calib-cache"
    paths = {"ckpt": ckpt, "data_root": data_root, "calib_dir": calib_dir, "cache": cache}
    paths["fp32"] = export_onnx(ckpt, base / "fp32.onnx").path
    paths["fp16"] = export_onnx(ckpt, base / "fp16.onnx", precision="fp16").path
    paths["int8"] = export_onnx(ckpt, base / "int8_trt.onnx", precision="int8", target="tensorrt",
                                calib=calib_dir, calib_images=128, calib_cache_dir=cache).path
    paths["int8_cpu"] = export_onnx(ckpt, base / "int8_cpu.onnx", precision="int8", target="cpu",
                                    calib={"data": "folder", "root": str(data_root), "split": "train"},
                                    calib_images=128, calib_cache_dir=cache).path
    manifest.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


# ----------------------------------------------------------------------------------- a folder data set
FOLDER_CLASSES = ["red", "green", "blue"]


def make_folder_dataset(root: Path, n_train: int = 24, n_test: int = 12, seed: int = 0, n_val: int = 0) -> Path:
    """Images with coloured squares; the labels are the colours present (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    for split, n in (("train", n_train), ("test", n_test), ("val", n_val)):
        if n == 0:
            continue
        rows = ["image,labels"]
        for i in range(n):
            canvas = np.full((48, 48, 3), 128, np.uint8)
            labels = [c for c in FOLDER_CLASSES if rng.random() < 0.5] or [FOLDER_CLASSES[i % 3]]
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


def run(recipe: Recipe, out: Path, resume: bool = False):
    from mlic_edge.train.trainer import Trainer
    trainer = Trainer(recipe, out, resume=resume, show_progress=False)
    return trainer, trainer.fit()


# ----------------------------------------------------------------------------------- a 3-class checkpoint
SIZE = 64
ANIMALS = ["cat", "dog", "car"]


def save_tiny_checkpoint(path: Path) -> Path:
    """An untrained 3-class test_resnet model at 64 px with per-class thresholds 0.5 / 0.4 / 0.6."""
    cfg = ModelConfig(num_classes=len(ANIMALS), backbone="test_resnet", pretrained="none", image_size=SIZE,
                      d_model=32, nhead=4, dim_feedforward=64)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": ANIMALS,
                           "preprocess": model.data_config(), "thresholds": [0.5, 0.4, 0.6]})
    return path


# ----------------------------------------------------------------------------------- the CLI
def run_cli(*args: str, timeout: float = 180, **env: str):
    """`python -m mlic_edge ARGS` from the repository, as a user's shell runs it (this tree's
    package; MLIC_EDGE_VERBOSE unset unless given in `env`)."""
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "MLIC_EDGE_VERBOSE"}
    environ["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "mlic_edge", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**environ, **env})
