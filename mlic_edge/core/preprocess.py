"""The one image preprocessing implementation, shared by training-time evaluation and the runtime.

Kept free of torch (edge devices often lack it): PIL + numpy only, and PIL is imported when an
image is first touched, so `import mlic_edge.runtime` needs numpy alone. The torch eval transform in
`mlic_edge.data.transforms` calls `preprocess` so that a model sees exactly the same pixels
whether it is evaluated in PyTorch or served from an ONNX/TensorRT file.

Resize mode is "squash": the whole image is resized to S x S without cropping, so nothing at the
border (where a label's object may sit) is cut off; the aspect ratio is not kept.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import BackendUnavailable, DatasetError

if TYPE_CHECKING:
    from PIL import Image

# Names of PIL's resampling filters (Image.Resampling[name.upper()]).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def pil():
    """The PIL package, imported on first use; one-line error where Pillow is missing."""
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError:
        raise BackendUnavailable("reading images needs Pillow: pip install pillow") from None
    return PIL


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as RGB, honouring the EXIF orientation (phone photos are often stored
    sideways with a rotation tag).

    Raises DatasetError naming the file when it is missing, unreadable or not a decodable image
    (truncated files included: decoding is forced here, not deferred to the first pixel access).
    """
    path = Path(path)
    PIL = pil()
    try:
        with warnings.catch_warnings():
            # Palette images with transparency warn on convert(); the alpha is dropped either way.
            warnings.simplefilter("ignore", UserWarning)
            with PIL.Image.open(path) as image:
                image = PIL.ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        # PIL reports undecodable/truncated data as OSError (UnidentifiedImageError included),
        # and some malformed headers as ValueError or SyntaxError.
        raise DatasetError(f"{path}: cannot decode image ({_one_line(e)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB. 16/32-bit greyscale is rescaled from its full range
    (PIL's own convert() would clip it at 255 and turn most pixels white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = pil().Image.fromarray(np.clip(values * (255.0 / scale), 0, 255).round().astype(np.uint8))
    return image.convert("RGB")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def preprocess(
    image: Image.Image,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> np.ndarray:
    """Squash-resize to (image_size, image_size), scale to [0, 1], normalise per channel.

    Returns float32 (3, S, S). Numerically equal (to float32 rounding) to torchvision's
    Resize((S, S), interpolation) + ToTensor() + Normalize(mean, std) on the same PIL image.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if image.mode != "RGB":
        image = _to_rgb(image)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), pil().Image.Resampling[interpolation.upper()])
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean_ = np.asarray(mean, dtype=np.float32)
    std_ = np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean_) / std_).transpose(2, 0, 1))


def preprocess_args(spec: dict) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """(image_size, mean, std, interpolation) of a stored preprocess spec, for `preprocess(image, *args)`."""
    return (int(spec["image_size"]), tuple(float(m) for m in spec["mean"]),
            tuple(float(s) for s in spec["std"]), str(spec.get("interpolation", "bicubic")))


def preprocess_batch(
    images: Sequence[Image.Image | str | os.PathLike],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> np.ndarray:
    """Preprocess PIL images and/or image paths (loaded with `load_image`) into one
    float32 (B, 3, S, S) array, ready for a runtime session."""
    batch = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for i, item in enumerate(images):
        image = load_image(item) if isinstance(item, (str, os.PathLike)) else item
        batch[i] = preprocess(image, image_size, mean, std, interpolation)
    return batch
