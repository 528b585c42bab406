"""Image transforms: PIL RGB image -> normalised float32 tensor (3, S, S).

Evaluation delegates to `mlic_edge.core.preprocess.preprocess`, the single implementation the
exported models also use, so PyTorch evaluation and edge inference see identical inputs.
Training adds the paper's augmentation (Sec. IV-B): Cutout + RandAugment, in the form of the
ASL reference code (CutoutPIL, then timm's RandAugment).
"""
from __future__ import annotations

import random
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageOps
from timm.data.auto_augment import rand_augment_transform
from torchvision import transforms as T

from ..core.errors import ConfigError
from ..core.preprocess import INTERPOLATIONS
from ..core.preprocess import preprocess as preprocess_image

RAND_AUGMENT = "rand-m9-mstd0.5-inc1"  # timm's standard ImageNet policy: magnitude 9, 2 ops per image


class Cutout:
    """ASL's CutoutPIL, applied with probability `p`: paints one square of side
    `size_factor` x the shorter image side, centred at a uniformly random pixel (clipped at the
    borders), in a random colour. Occluding part of the image forces the classifier to use every
    object rather than the most salient one."""

    def __init__(self, size_factor: float = 0.5, p: float = 0.5):
        self.size_factor = size_factor
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        image = image.copy()
        width, height = image.size
        half = int(self.size_factor * min(width, height) + 0.5) // 2
        cx, cy = random.randrange(width), random.randrange(height)
        colour = tuple(random.randint(0, 255) for _ in range(3))
        box = [max(cx - half, 0), max(cy - half, 0), min(cx + half, width) - 1, min(cy + half, height) - 1]
        ImageDraw.Draw(image).rectangle(box, fill=colour)
        return image

    def __repr__(self) -> str:
        return f"Cutout(size_factor={self.size_factor}, p={self.p})"


class EvalTransform:
    """Deterministic eval/inference transform; a class (not a lambda) so DataLoader workers can
    pickle it."""

    def __init__(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str):
        self.image_size = image_size
        self.mean = mean
        self.std = std
        self.interpolation = interpolation

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = preprocess_image(image, self.image_size, self.mean, self.std, self.interpolation)
        return torch.from_numpy(array)

    def __repr__(self) -> str:
        return (f"EvalTransform(image_size={self.image_size}, mean={self.mean}, std={self.std}, "
                f"interpolation={self.interpolation!r})")


def build_transform(preprocess: dict[str, Any], train: bool, cutout: bool = True,
                    randaugment: str = RAND_AUGMENT):
    """Transform for a dataset from a preprocess spec (the dict stored in model metadata):
    {"image_size": int, "mean": [3], "std": [3], "interpolation": "bicubic"|"bilinear", "resize": "squash"}.

    Training adds Cutout (when `cutout`) and timm's RandAugment given by its spec string
    (`randaugment`, e.g. "rand-m9-mstd0.5-inc1"; "" turns it off).
    """
    image_size, mean, std, interpolation = _parse_preprocess(preprocess)
    if not train:
        return EvalTransform(image_size, mean, std, interpolation)
    steps = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode(interpolation))]
    if cutout:
        steps.append(Cutout(size_factor=0.5, p=0.5))
    if randaugment:
        steps.append(build_rand_augment(image_size, mean, randaugment))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


def build_rand_augment(image_size: int, mean: tuple[float, ...], spec: str = RAND_AUGMENT):
    """timm's RandAugment (RAND_AUGMENT policy) with its posterize kept at >= 1 bit.

    At the top magnitude (10, reached by the magnitude noise) timm asks PIL to keep 0 bits, i.e.
    a black image. Pillow 13 raises on that, which would crash a training run at a
    random step; a black image would anyway be a useless sample with positive labels.
    """
    hparams = {
        "translate_const": int(image_size * 0.45),        # timm's ImageNet setting
        "img_mean": tuple(round(255 * m) for m in mean),  # fill for rotate/shear/translate
    }
    rand_augment = rand_augment_transform(spec, hparams)
    for op in rand_augment.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize_at_least_one_bit
    return rand_augment


def _posterize_at_least_one_bit(image: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    return image if bits_to_keep >= 8 else ImageOps.posterize(image, max(int(bits_to_keep), 1))


def _parse_preprocess(spec: dict[str, Any]) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    try:
        image_size = int(spec["image_size"])
        mean = tuple(float(m) for m in spec["mean"])
        std = tuple(float(s) for s in spec["std"])
        interpolation = str(spec.get("interpolation", "bicubic"))
        resize = str(spec.get("resize", "squash"))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"preprocess: needs image_size, mean and std ({type(e).__name__}: {e})") from None
    if image_size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"preprocess: invalid image_size/mean/std: {image_size}, {mean}, {std}")
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(f"preprocess: interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if resize != "squash":
        raise ConfigError(f"preprocess: only resize 'squash' is supported, got {resize!r}")
    return image_size, mean, std, interpolation
