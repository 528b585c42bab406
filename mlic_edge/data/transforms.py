"""Image transforms: PIL RGB image -> normalised float32 tensor (3, S, S).

Evaluation delegates to `mlic_edge.core.preprocess.preprocess`, the single implementation the
exported models also use, so PyTorch evaluation and edge inference see identical inputs.
Training adds the paper's augmentation (Sec. IV-B): Cutout + RandAugment, in the form of the
ASL reference code (CutoutPIL, then timm's RandAugment).
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageOps
from timm.data.auto_augment import rand_augment_transform
from torchvision import transforms as T

from ..core.preprocess import Preprocessing

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

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(self.preprocessing(image))

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocessing})"


def build_transform(preprocess: Mapping[str, Any] | Preprocessing, train: bool, cutout: bool = True,
                    randaugment: str = RAND_AUGMENT):
    """Transform for a dataset from a preprocess spec (`Preprocessing`, or the dict stored in model
    metadata: {"image_size": int, "mean": [3], "std": [3], "interpolation": "bicubic"|"bilinear",
    "resize": "squash"}; ConfigError when it is invalid).

    Training adds Cutout (when `cutout`) and timm's RandAugment given by its spec string
    (`randaugment`, e.g. "rand-m9-mstd0.5-inc1"; "" turns it off).
    """
    spec = Preprocessing.from_dict(preprocess)
    if not train:
        return EvalTransform(spec)
    size = spec.image_size
    steps = [T.Resize((size, size), interpolation=T.InterpolationMode(spec.interpolation))]
    if cutout:
        steps.append(Cutout(size_factor=0.5, p=0.5))
    if randaugment:
        steps.append(build_rand_augment(size, spec.mean, randaugment))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(spec.mean, spec.std)])


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
