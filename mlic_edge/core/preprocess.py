"""The one image preprocessing implementation, shared by training-time evaluation and the runtime.

Kept free of torch (edge devices often lack it): PIL + numpy only, and PIL is imported when an
image is first touched, so `import mlic_edge.runtime` needs numpy alone. The torch eval transform in
`mlic_edge.data.transforms` calls `preprocess` so that a model sees exactly the same pixels
whether it is evaluated in PyTorch or served from an ONNX/TensorRT file.

Resize mode is "squash": the whole image is resized to S x S without cropping, so nothing at the
border (where a label's object may sit) is cut off; the aspect ratio is not kept.

JPEGs that are then resized to S px are decoded at a reduced scale (`load_image(path, reduce_to=S)`:
libjpeg's DCT scaling to the smallest of 1/2, 1/4, 1/8 that keeps both sides >= S, then the same
resize): a 640x480 photo for a 112 px model decodes at 160x120, in 0.55 ms instead of 4.5 (2 CPU
cores; with simplejpeg, 0.72 with Pillow's draft mode, the same pixels). Evaluation and the
runtime both read images this way, so they still see the same pixels.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendUnavailable, ConfigError, DatasetError, MLICError, one_line

if TYPE_CHECKING:
    from PIL import Image

# Names of PIL's resampling filters (Image.Resampling[name.upper()]).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
RESIZES = ("squash",)


@dataclass(frozen=True)
class Preprocessing:
    """A model's input recipe, as its metadata stores it: squash-resize to image_size, scale to
    [0, 1], normalise by mean and std. Parsed and checked once (`from_dict`), so every reader
    (the runtime, the server, the Triton repository, the torch transforms) takes typed values."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize: str = "squash"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | Preprocessing, source: str = "preprocess",
                  error: type[MLICError] = ConfigError) -> Preprocessing:
        """The spec of a metadata/config dict; `error` (one line naming `source`) when it is
        incomplete or holds values this runtime cannot apply."""
        if isinstance(spec, Preprocessing):
            return spec
        try:
            made = cls(int(spec["image_size"]), tuple(float(m) for m in spec["mean"]),
                       tuple(float(s) for s in spec["std"]), str(spec.get("interpolation", "bicubic")),
                       str(spec.get("resize", "squash")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise error(f"{source}: preprocess needs image_size, mean and std ({type(e).__name__}: {e})") from None
        made.check(source, error)
        return made

    def check(self, source: str, error: type[MLICError]) -> None:
        if self.image_size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise error(f"{source}: preprocess has an invalid image_size/mean/std: {self.image_size}, "
                        f"{self.mean}, {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise error(f"{source}: preprocess interpolation must be one of {sorted(INTERPOLATIONS)}, "
                        f"got {self.interpolation!r}")
        if self.resize not in RESIZES:
            raise error(f"{source}: preprocess resize: only 'squash' is supported, got {self.resize!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "resize": self.resize}

    @property
    def args(self) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
        """(image_size, mean, std, interpolation): `preprocess(image, *args)`."""
        return self.image_size, self.mean, self.std, self.interpolation

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One PIL image -> float32 (3, S, S)."""
        return preprocess(image, *self.args)

    def batch(self, images: Sequence[Image.Image | str | os.PathLike]) -> np.ndarray:
        """PIL images and/or paths -> float32 (B, 3, S, S)."""
        return preprocess_batch(images, *self.args)


def pil():
    """The PIL package, imported on first use; one-line error where Pillow is missing."""
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError:
        raise BackendUnavailable("reading images needs Pillow: pip install pillow") from None
    return PIL


def load_image(path: str | os.PathLike, reduce_to: int | None = None) -> Image.Image:
    """Read an image file as RGB, honouring the EXIF orientation (phone photos are often stored
    sideways with a rotation tag). `reduce_to`: the image is about to be resized to that many
    pixels a side, so a JPEG may be decoded at a reduced scale whose sides stay >= it.

    Raises DatasetError naming the file when it is missing, unreadable or not a decodable image
    (truncated files included: decoding is forced here, not deferred to the first pixel access).
    """
    from .image_bytes import ImageDecodeError, decode_image_bytes

    path = Path(path)
    pil()                                                   # the one-line error where Pillow is missing
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read image ({one_line(e)})") from None
    try:
        return decode_image_bytes(data, str(path), reduce_to)
    except ImageDecodeError as e:
        raise DatasetError(str(e)) from None


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
        from .image_bytes import _to_rgb
        image = _to_rgb(image)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), pil().Image.Resampling[interpolation.upper()])
    pixels = np.asarray(image)                                               # uint8 (S, S, 3)
    # (x / 255 - mean) / std, the same float32 operations as torchvision's ToTensor + Normalize
    # (bit for bit), done per channel in place in the (3, S, S) output: no float (S, S, 3) copy
    # and no transpose copy, half the time of the textbook expression.
    out = np.empty((3, image_size, image_size), dtype=np.float32)
    for c in range(3):
        channel = out[c]
        channel[...] = pixels[..., c]
        channel /= np.float32(255.0)
        channel -= np.float32(mean[c])
        channel /= np.float32(std[c])
    return out


def image_from_array(array: np.ndarray) -> Image.Image:
    """An RGB PIL image from an HWC uint8 array (RGB; HxW greyscale and RGBA accepted too).
    Raises ValueError with one line for anything else."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]                                               # drop the alpha
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3))):
        raise ValueError(f"expected an HWC RGB array (H, W, 3), got shape {tuple(array.shape)}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if min(array.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {tuple(array.shape)}")
    return pil().Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def preprocess_args(spec: Mapping[str, Any] | Preprocessing) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """(image_size, mean, std, interpolation) of a stored preprocess spec, for `preprocess(image, *args)`."""
    return Preprocessing.from_dict(spec).args


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
