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

from mlic_edge.checkpoint import save_checkpoint
from mlic_edge.config import ModelConfig
from mlic_edge.export import export_onnx
from mlic_edge.model import build_model

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


