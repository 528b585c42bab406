#!/usr/bin/env python3
"""`region-mosaics`: a multi-label `folder` data set of images tiled into irregular regions, each
region filled from one of ten installed images (medical, terrain, microscopy, drawings, faces).

    python benchmarks/region_mosaics.py --out /tmp/cache              # 3,000 + 1,000 mosaics, 128 px
    python benchmarks/region_mosaics.py --out /tmp/cache --seed 1 --train-images 1000 --test-images 500

Why: a third data set of another kind than the digits demo (dark strokes on a flat canvas) and
photo-scenes (objects pasted on a cluttered background): no background and no objects; the whole
image is covered by 1 to 4 regions with straight borders at any angle, and a class is recognised
from the texture, tone and structure of a region (a slice of an MRI, shaded relief, a grid of
faces, a silhouette's edge), at many zooms and orientations.

Where the images come from (no downloads; all ship inside installed packages):
  * scikit-image, skimage/data/: cell.png (microscopy), clock_motion.png (a motion-blurred clock),
    color.png (a colour wheel), horse.png (a silhouette), logo.png (scikit-image's logo, a drawn
    snake), phantom.png (the Shepp-Logan CT phantom), lfw_subset.npy (its first 100 arrays: 25x25
    grey faces from Labeled Faces in the Wild, tiled 10 x 10 into one image);
  * matplotlib, mpl-data/sample_data/: s1045.ima.gz (a 256x256 16-bit MRI slice of a head),
    jacksboro_fault_dem.npz (a digital elevation model, drawn as shaded relief with matplotlib's
    LightSource), grace_hopper.jpg (a portrait photo).
None of them is used by photo-scenes (benchmarks/photo_scenes.py).

Each mosaic is a power diagram (a Voronoi diagram with a random weight per site) of k sites,
k = 1 to 4 (uniform), one class per site, all different; a region smaller than MIN_SHARE of the
image has the sites drawn again. Each region is filled with a square crop of its class image (side
ZOOM x the canvas, capped by the part of the image the split may use), resized to the canvas,
turned by a multiple of 90 degrees, maybe mirrored, with contrast, brightness and a mild colour
tint jittered. A crop flatter than MIN_REGION_STD inside its region is drawn again. Labels: the
classes of the regions.

Train and test share no source pixels: training crops come from the left 70% of each class image's
width, test crops from the right 30% (for faces: the three right columns of the grid, 30 people
training never sees). Some classes show other content on their test side: cell.png's cell is on
the right (the left is the microscope's background), horse.png's right side is the neck and head,
color.png's hues differ between the sides.

Cache layout: as photo-scenes' (benchmarks/photo_scenes.py), under <cache>/region-mosaics/.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image
from photo_scenes import build_generated_set, main, write_splits

FORMAT = "mlic-edge-region-mosaics/1"   # bump when the generator changes: cached sets get rebuilt

# class name -> (package, file)
CLASSES = {
    "cell": ("skimage", "cell.png"),
    "clock": ("skimage", "clock_motion.png"),
    "colour-wheel": ("skimage", "color.png"),
    "faces": ("skimage", "lfw_subset.npy"),
    "horse": ("skimage", "horse.png"),
    "logo": ("skimage", "logo.png"),
    "phantom": ("skimage", "phantom.png"),
    "mri": ("matplotlib", "s1045.ima.gz"),
    "relief": ("matplotlib", "jacksboro_fault_dem.npz"),
    "portrait": ("matplotlib", "grace_hopper.jpg"),
}

TRAIN_SHARE = 0.7              # of each class image's width (from the left); the rest is test's
MAX_REGIONS = 4
MIN_SHARE = 0.08               # the smallest region, as a share of the image
SITE_TRIES = 200
ZOOM = (0.4, 1.6)              # crop side over the canvas side (log-uniform)
MIN_REGION_STD = 10.0          # grey levels, inside the region
CROP_TRIES = 50
CONTRAST, BRIGHTNESS, TINT = (0.7, 1.3), (0.7, 1.3), (0.85, 1.15)


def build_region_mosaics(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    n_train: int = 3000,
    n_test: int = 1000,
    canvas: int = 128,
) -> Path:
    """Create (or reuse) the set under <cache_dir>/region-mosaics/ and return its folder, loadable
    as a `folder` dataset. cache_dir defaults to $MLIC_EDGE_CACHE or ~/.cache/mlic-edge.

    Deterministic: the same parameters and source files give the same images and labels.
    """
    def write(folder: Path, params: dict, sources: dict[str, Path]) -> None:
        _write_set(folder, params, {name: load_class_image(path) for name, path in sources.items()})

    note = f"train crops from the left {TRAIN_SHARE:.0%} of each class image's width, test crops from the rest"
    return build_generated_set(cache_dir, "region-mosaics", FORMAT, {"seed": seed, "n_train": n_train,
                               "n_test": n_test, "canvas": canvas}, CLASSES, write, note)


def load_class_image(path: Path) -> np.ndarray:
    """An installed file as an (H, W, 3) float32 RGB array in 0..255: images as they are (alpha
    over white), the MRI slice scaled to its maximum, the elevation model as shaded relief, the
    faces as a 10 x 10 grid."""
    if path.name.endswith(".ima.gz"):
        raw = np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint16).reshape(256, 256)
        grey = raw.astype(np.float32) / raw.max() * 255
    elif path.suffix == ".npz":
        from matplotlib.colors import LightSource
        elevation = np.load(path)["elevation"]
        grey = LightSource(azdeg=315, altdeg=45).hillshade(elevation, vert_exag=0.05).astype(np.float32) * 255
    elif path.suffix == ".npy":
        faces = np.load(path)[:100]   # the first 100 are faces, the rest are not
        side = faces.shape[1]
        grey = faces.reshape(10, 10, side, side).transpose(0, 2, 1, 3).reshape(10 * side, 10 * side) * 255
    else:
        image = Image.open(path)
        if image.mode in ("RGBA", "LA", "P"):
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.repeat(grey.astype(np.float32)[:, :, None], 3, axis=2)


def _write_set(folder: Path, params: dict, images: dict[str, np.ndarray]) -> None:
    def renderer(split: str):
        # the columns of each class image this split may crop from
        columns = []
        for image in images.values():
            cut = round(TRAIN_SHARE * image.shape[1])
            columns.append(image[:, :cut] if split == "train" else image[:, cut:])
        return lambda rng: _render_mosaic(rng, columns, params["canvas"])

    write_splits(folder, params, list(CLASSES), renderer, "region-mosaics")


def _render_mosaic(rng: np.random.Generator, class_images: list[np.ndarray], canvas: int) -> tuple[np.ndarray, list[int]]:
    """One RGB mosaic (canvas, canvas, 3) uint8 and the class indices of its regions."""
    classes = [int(k) for k in rng.choice(len(class_images), size=int(rng.integers(1, MAX_REGIONS + 1)), replace=False)]
    owner = _regions(rng, len(classes), canvas)
    mosaic = np.zeros((canvas, canvas, 3), dtype=np.float32)
    for region, k in enumerate(classes):
        mask = owner == region
        mosaic[mask] = _fill(rng, class_images[k], mask, canvas)[mask]
    return np.clip(mosaic, 0, 255).round().astype(np.uint8), classes


def _regions(rng: np.random.Generator, count: int, canvas: int) -> np.ndarray:
    """(canvas, canvas) region index per pixel: a power diagram of `count` random sites, drawn
    again until every region covers at least MIN_SHARE of the image."""
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    for _ in range(SITE_TRIES):
        sites = rng.uniform(0, canvas, size=(count, 2))
        weights = rng.uniform(0, (0.3 * canvas) ** 2, size=count)
        distance = (xs[None] - sites[:, 0, None, None]) ** 2 + (ys[None] - sites[:, 1, None, None]) ** 2
        owner = np.argmin(distance - weights[:, None, None], axis=0)
        if np.bincount(owner.ravel(), minlength=count).min() >= MIN_SHARE * canvas * canvas:
            return owner
    raise RuntimeError(f"region-mosaics: no {count} regions of at least {MIN_SHARE:.0%} in {SITE_TRIES} tries")


def _fill(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, canvas: int) -> np.ndarray:
    """A (canvas, canvas, 3) float32 crop of `image` at a random zoom and orientation, jittered;
    drawn again (up to CROP_TRIES) while it is flat inside `mask`: a flat patch (the MRI's black
    surround, the horse's white) says nothing about its class."""
    height, width = image.shape[:2]
    for _ in range(CROP_TRIES):
        side = min(canvas * np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1]))), width, height)
        x = rng.uniform(0, width - side)
        y = rng.uniform(0, height - side)
        crop = Image.fromarray(image.astype(np.uint8)).resize(
            (canvas, canvas), Image.Resampling.BILINEAR, box=(x, y, x + side, y + side))
        fill = np.rot90(np.asarray(crop, dtype=np.float32), k=int(rng.integers(4)))
        if fill[mask].mean(axis=1).std() >= MIN_REGION_STD:
            break
    if rng.random() < 0.5:
        fill = fill[:, ::-1]
    mean = fill.mean()
    fill = (mean + (fill - mean) * rng.uniform(*CONTRAST)) * rng.uniform(*BRIGHTNESS)
    return fill * rng.uniform(*TINT, size=3)


if __name__ == "__main__":
    main(build_region_mosaics, "region-mosaics", __doc__)
