#!/usr/bin/env python3
"""`photo-scenes`: a multi-label `folder` data set cut from real photos that ship with Python packages.

    python benchmarks/photo_scenes.py --out /tmp/cache               # 3,000 + 1,000 scenes, 128 px
    python benchmarks/photo_scenes.py --out /tmp/cache --seed 1 --train-images 1000 --test-images 500

Why: a second data set of another kind than the digits demo (mlic_edge/data/digits.py: dark
strokes on a light, flat canvas), for measurements such as benchmarks/own_data_rule.py: natural
photo textures and colours, objects at many scales, on cluttered backgrounds.

Where the photos come from (no downloads; both packages are in the `test` extra):
  * scikit-image, files in skimage/data/ (read directly with Pillow: some skimage.data functions
    would try to download): astronaut.png, brick.png, chelsea.png, coffee.png, coins.png,
    grass.png, gravel.png, rocket.jpg as classes; moon.png, hubble_deep_field.jpg, page.png,
    text.png, camera.png, motorcycle_left.png, retina.jpg, ihc.png as backgrounds;
  * scikit-learn, sklearn/datasets/images/ (what load_sample_images() reads): china.jpg, flower.jpg
    as classes.

Ten classes, one source photo each (CLASSES; the grayscale ones as RGB). Each scene is a crop of a
background photo (random zoom, blurred, colour-tinted), with 1 to 4 rectangles pasted on it (sides
32-72 px at 128 px, each side drawn on its own), each a crop of a different class photo at a random
zoom (0.5x-2x its size in the source), maybe mirrored, with brightness, contrast and saturation
jitter. A rectangle may cover at most MAX_COVER of an earlier one, so every labelled patch stays
visible; one that finds no room is left out. Labels: the classes pasted.

Train and test share no source pixels: training patches are cut from the left 70% of each class
photo's width, test patches from the right 30%. The test mAP measures recognition of unseen parts
of each photo, which for some classes show other content: china.jpg's right side is trees, water
and sky (the pagoda is on the left), astronaut.png's the shuttle and a helmet (the orange suit is on
the left), flower.jpg's mostly dark leaves. The backgrounds carry no label and are drawn from whole photos.

Cache layout (built in a temporary folder, renamed into place, then reused):

    <cache>/photo-scenes/seed<S>-train<N>-test<M>-canvas<C>/
        manifest.json    generator format, parameters, source files and their sha256 (prefix)
        classes.txt      one class per line
        train.csv test.csv
        train/00000.png ...   test/00000.png ...
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mlic_edge.core.files import build_folder, file_sha256
from mlic_edge.core.files import cache_dir as mlic_cache_dir

FORMAT = "mlic-edge-photo-scenes/1"   # bump when the generator changes: cached sets get rebuilt
MANIFEST = "manifest.json"

# where each package keeps its photos, as path parts from the package's installed folder's parent
PHOTO_FOLDERS = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets", "images"),
                 "matplotlib": ("matplotlib", "mpl-data", "sample_data")}
# class name -> (package, file)
CLASSES = {
    "astronaut": ("skimage", "astronaut.png"),
    "brick": ("skimage", "brick.png"),
    "cat": ("skimage", "chelsea.png"),
    "coffee": ("skimage", "coffee.png"),
    "coins": ("skimage", "coins.png"),
    "grass": ("skimage", "grass.png"),
    "gravel": ("skimage", "gravel.png"),
    "rocket": ("skimage", "rocket.jpg"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}
BACKGROUNDS = [("skimage", name) for name in (
    "moon.png", "hubble_deep_field.jpg", "page.png", "text.png", "camera.png",
    "motorcycle_left.png", "retina.jpg", "ihc.png")]

TRAIN_SHARE = 0.7                    # of each class photo's width (from the left); the rest is test's
MAX_PATCHES = 4
PATCH_SIDE = (32 / 128, 72 / 128)    # a patch's width and height, as fractions of the canvas
ZOOM = (0.5, 2.0)                    # crop size in the source over patch size (log-uniform)
MAX_COVER = 0.15                     # max share of an earlier patch a later one may cover
MIN_PATCH_STD = 12.0                 # a crop flatter than this (grey levels) is drawn again
CROP_TRIES = 50                      # on rocket's and flower's test sides about 1 crop in 10 passes
PLACEMENT_TRIES = 100
BACKGROUND_BLUR = (2.0, 5.0)         # Gaussian radius at 128 px: clutter without class-like detail
BRIGHTNESS, CONTRAST, SATURATION = (0.7, 1.3), (0.7, 1.3), (0.6, 1.4)


def build_photo_scenes(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_train: int = 3000,
    n_test: int = 1000,
    canvas: int = 128,
) -> Path:
    """Create (or reuse) the set under <cache_dir>/photo-scenes/ and return its folder, loadable
    as a `folder` dataset. cache_dir defaults to $MLIC_EDGE_CACHE or ~/.cache/mlic-edge.

    Deterministic: the same parameters and source files give the same images and labels.
    """
    # classes by class name, backgrounds by file name
    wanted = {**CLASSES, **{name: (package, name) for package, name in BACKGROUNDS}}
    note = (f"class patches: train from the left {TRAIN_SHARE:.0%} of each class photo's width, test from the "
            f"rest; backgrounds from whole photos")
    return build_generated_set(cache_dir, "photo-scenes", FORMAT, {"seed": seed, "n_train": n_train, "n_test": n_test,
                               "canvas": canvas}, wanted, _write_set, note)


def build_generated_set(cache_dir: str | Path | None, folder_name: str, format_name: str, params: dict,
                        wanted: dict[str, tuple[str, str]], write: Callable[[Path, dict, dict[str, Path]], None],
                        note: str) -> Path:
    """<cache_dir>/<folder_name>/seed<S>-train<N>-test<M>-canvas<C>/, written by write(folder,
    params, {key: installed source file}) with a manifest (format, parameters, sources and their
    sha256), unless a complete one is there."""
    if params["n_train"] < 1 or params["n_test"] < 1 or params["canvas"] < 64:
        raise ValueError(f"{folder_name}: need n_train >= 1, n_test >= 1, canvas >= 64 "
                         f"(got {params['n_train']}, {params['n_test']}, {params['canvas']})")
    root = (Path(cache_dir) if cache_dir is not None else mlic_cache_dir("")) / folder_name
    target = root / "seed{seed}-train{n_train}-test{n_test}-canvas{canvas}".format(**params)
    sources = {key: source_path(*where) for key, where in wanted.items()}
    source_ids = describe_sources(wanted, sources)

    def write_all(folder: Path) -> None:
        write(folder, params, sources)
        manifest = {"format": format_name, "params": params, "sources": source_ids, "note": note}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))   # written last: marks the set complete

    return build_folder(target, write_all, lambda folder: is_complete(folder, format_name, params, source_ids))


def positive_counts(folder: Path) -> dict[str, dict[str, int]]:
    """{split: {class: images labelled with it}} of a built set."""
    classes = (folder / "classes.txt").read_text().split()
    counts = {}
    for split in ("train", "test"):
        counts[split] = dict.fromkeys(classes, 0)
        with open(folder / f"{split}.csv", newline="") as f:
            for row in csv.DictReader(f):
                for label in filter(None, row["labels"].split(";")):
                    counts[split][label] += 1
    return counts


def source_path(package: str, name: str) -> Path:
    """The installed file; found from the package's location without importing it (importing
    skimage alone takes a second)."""
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent.parent.joinpath(*PHOTO_FOLDERS[package], name) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{'/'.join([*PHOTO_FOLDERS[package], name])}: not installed (the benchmark sets "
                                f"need scikit-image and scikit-learn: pip install 'mlic-edge[test]')")
    return path


def describe_sources(wanted: dict[str, tuple[str, str]], sources: dict[str, Path]) -> dict[str, dict]:
    """{key: {file, sha256 prefix}} of the source files, for a set's manifest."""
    return {key: {"file": "/".join([*PHOTO_FOLDERS[package], name]), "sha256": file_sha256(sources[key])[:16]}
            for key, (package, name) in wanted.items()}


def is_complete(folder: Path, format_name: str, params: dict, source_ids: dict) -> bool:
    """Whether `folder` holds a finished set of this generator format, parameters and sources."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (manifest.get("format") == format_name and manifest.get("params") == params
            and manifest.get("sources") == source_ids)


def _write_set(folder: Path, params: dict, sources: dict[str, Path]) -> None:
    photos = {name: Image.open(path).convert("RGB") for name, path in sources.items()}
    class_photos = [photos[name] for name in CLASSES]
    backgrounds = [photos[name] for _, name in BACKGROUNDS]

    def renderer(split: str):
        # the part of each class photo this split may crop from: (left, top, right, bottom)
        regions = []
        for photo in class_photos:
            cut = round(TRAIN_SHARE * photo.width)
            regions.append((0, 0, cut, photo.height) if split == "train" else (cut, 0, photo.width, photo.height))
        return lambda rng: _render_scene(rng, class_photos, regions, backgrounds, params["canvas"])

    write_splits(folder, params, list(CLASSES), renderer, "photo-scenes")


def write_splits(folder: Path, params: dict, class_names: list[str],
                 renderer: Callable[[str], Callable[[np.random.Generator], tuple[np.ndarray, list[int]]]],
                 set_name: str) -> None:
    """classes.txt, then per split its images and CSV: renderer(split)(rng) draws one (image,
    class indices); a split in which a class has no positive image is an error."""
    (folder / "classes.txt").write_text("".join(f"{name}\n" for name in class_names))
    for split_index, (split, count) in enumerate((("train", params["n_train"]), ("test", params["n_test"]))):
        # One generator per split: changing n_test leaves the training images as they were.
        rng = np.random.default_rng([params["seed"], split_index + 1])
        render = renderer(split)
        (folder / split).mkdir()
        lines, positives = ["image,labels"], np.zeros(len(class_names), dtype=int)
        for i in range(count):
            image, labels = render(rng)
            name = f"{split}/{i:05d}.png"
            # compress_level 1: the default (6) writes files only 12% smaller, 2.5x slower
            Image.fromarray(image).save(folder / name, compress_level=1)
            lines.append(f"{name},{';'.join(class_names[k] for k in sorted(labels))}")
            positives[labels] += 1
        # a class without positives has no AP: the split's mAP would silently average fewer classes
        missing = [name for name, n in zip(class_names, positives) if n == 0]
        if missing:
            raise ValueError(f"{set_name}: no {split} image shows {', '.join(missing)} "
                             f"in {count} images; use more images")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")


def _render_scene(rng: np.random.Generator, class_photos: list[Image.Image], regions: list[tuple],
                  backgrounds: list[Image.Image], canvas: int) -> tuple[np.ndarray, list[int]]:
    """One RGB scene (canvas, canvas, 3) uint8 and the class indices pasted on it."""
    image = _background(rng, backgrounds[rng.integers(len(backgrounds))], canvas)
    lo, hi = (round(f * canvas) for f in PATCH_SIDE)
    boxes: list[tuple[int, int, int, int]] = []
    labels = []
    for k in rng.choice(len(class_photos), size=int(rng.integers(1, MAX_PATCHES + 1)), replace=False):
        width, height = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, canvas - np.array([width, height]) + 1))
            box = (x, y, x + width, y + height)
            if all(_covered_share(earlier, box) <= MAX_COVER for earlier in boxes):
                break
        else:
            continue   # no room left: the class is not pasted (and not labelled)
        image[y:y + height, x:x + width] = _patch(rng, class_photos[k], regions[k], width, height)
        boxes.append(box)
        labels.append(int(k))
    return image, labels


def _background(rng: np.random.Generator, photo: Image.Image, canvas: int) -> np.ndarray:
    """A square crop of a background photo at a random zoom, blurred so it adds clutter (edges,
    blobs, colours) without sharp detail, and tinted so backgrounds come in many colours (the grey
    photos included), not a few fixed ones a model could learn to discount."""
    side = min(int(canvas * np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1])))), photo.width, photo.height)
    x = int(rng.integers(0, photo.width - side + 1))
    y = int(rng.integers(0, photo.height - side + 1))
    crop = photo.resize((canvas, canvas), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side))
    crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(*BACKGROUND_BLUR) * canvas / 128))
    tint = rng.uniform(0.5, 1.2, size=3)
    return np.clip(np.asarray(crop, dtype=np.float32) * tint, 0, 255).astype(np.uint8)


def _patch(rng: np.random.Generator, photo: Image.Image, region: tuple, width: int, height: int) -> np.ndarray:
    """A (height, width, 3) uint8 crop of `photo` inside `region`, at a random zoom, maybe mirrored,
    colour-jittered. Flat crops (sky, blurred backdrop) say nothing about their class: they are
    drawn again, up to CROP_TRIES times."""
    left, top, right, bottom = region
    for _ in range(CROP_TRIES):
        # one zoom for both sides keeps the photo's aspect; capped where the region is smaller
        zoom = min(np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1]))),
                   (right - left) / width, (bottom - top) / height)
        crop_w, crop_h = width * zoom, height * zoom
        x = left + rng.uniform(0, right - left - crop_w)
        y = top + rng.uniform(0, bottom - top - crop_h)
        patch = np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR,
                                        box=(x, y, x + crop_w, y + crop_h)), dtype=np.float32)
        if patch.mean(axis=2).std() >= MIN_PATCH_STD:
            break
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    grey = patch.mean(axis=2, keepdims=True)
    patch = grey + (patch - grey) * rng.uniform(*SATURATION)
    mean = patch.mean()
    patch = mean + (patch - mean) * rng.uniform(*CONTRAST)
    patch = patch * rng.uniform(*BRIGHTNESS)
    return np.clip(patch, 0, 255).round().astype(np.uint8)


def _covered_share(earlier: tuple[int, int, int, int], later: tuple[int, int, int, int]) -> float:
    """The share of the earlier box's area that the later box (pasted on top) hides."""
    width = min(earlier[2], later[2]) - max(earlier[0], later[0])
    height = min(earlier[3], later[3]) - max(earlier[1], later[1])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / ((earlier[2] - earlier[0]) * (earlier[3] - earlier[1]))


def main(build: Callable[..., Path] | None = None, folder_name: str = "photo-scenes", doc: str | None = None) -> None:
    """The command line of a generated set: build it (or find it) and print its positives per class."""
    build = build or build_photo_scenes
    parser = argparse.ArgumentParser(description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help=f"cache folder (the set goes to OUT/{folder_name}/...); "
                                                 "default $MLIC_EDGE_CACHE or ~/.cache/mlic-edge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--canvas", type=int, default=128)
    args = parser.parse_args()

    started = time.perf_counter()
    folder = build(args.out, seed=args.seed, n_train=args.train_images, n_test=args.test_images, canvas=args.canvas)
    print(f"{folder}  ({time.perf_counter() - started:.1f} s)")
    counts = positive_counts(folder)
    width = max(len(name) for name in counts["train"]) + 1
    print(f"{'class':<{width}} {'train':>6} {'test':>6}")
    for name in counts["train"]:
        print(f"{name:<{width}} {counts['train'][name]:>6} {counts['test'][name]:>6}")


if __name__ == "__main__":
    main()
