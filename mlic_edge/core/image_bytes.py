"""Decoding an encoded image held in memory: the one decoder behind `core.preprocess.load_image`
(a file's bytes), the server (a request row) and the Triton repository's preprocessing model, so
all of them see the same pixels: JPEGs decoded at a reduced scale when the model needs fewer
pixels (simplejpeg, libjpeg-turbo's TurboJPEG API, else Pillow's draft mode: the same pixels,
simplejpeg in three quarters of the time), EXIF orientation applied, any mode made 8-bit RGB.

Self-contained on purpose (numpy, PIL, optional simplejpeg, imported inside the functions): the
functions here are copied verbatim into the Python-backend preprocessing model that
`export-triton` writes, which runs in NVIDIA's container without mlic_edge.
"""
from __future__ import annotations

import io
import warnings

ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
               6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


class ImageDecodeError(ValueError):
    """One line: the image named `source` cannot be decoded."""


def decode_image_bytes(data: bytes, source: str = "image", reduce_to: int | None = None):
    """An encoded image (JPEG/PNG/WebP/...) -> an RGB PIL image. `reduce_to`: the image is about to
    be resized to that many pixels a side, so a JPEG may be decoded at a reduced scale whose sides
    stay >= it (libjpeg's DCT scaling, as `load_image`). ImageDecodeError (one line) otherwise."""
    import PIL.Image
    import PIL.ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with PIL.Image.open(io.BytesIO(data)) as image:
                if reduce_to and image.format == "JPEG":
                    fast = _jpeg_reduced(data, image, reduce_to)
                    if fast is not None:
                        return fast
                    image.draft("RGB", (reduce_to, reduce_to))
                image = PIL.ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except PIL.UnidentifiedImageError:     # its message names the in-memory buffer, not the file
        raise ImageDecodeError(f"{source}: cannot decode image (not a known image format)") from None
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{source}: cannot decode image ({' '.join(str(e).split()) or type(e).__name__})") from None


def _jpeg_reduced(data: bytes, header, reduce_to: int):
    """simplejpeg's reduced-scale decode of a plain RGB/greyscale JPEG, or None (Pillow decodes)."""
    import PIL.Image

    if header.mode not in ("RGB", "L"):
        return None
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=reduce_to, min_width=reduce_to)
    except ValueError:
        return None
    image = PIL.Image.fromarray(pixels)
    turn = ORIENTATION.get(header.getexif().get(0x0112))
    return image.transpose(PIL.Image.Transpose[turn]) if turn else image


def _to_rgb(image):
    """Any PIL mode -> 8-bit RGB; 16/32-bit greyscale rescaled from its full range (as
    `core.preprocess._to_rgb`, which PIL's convert() alone would clip at 255)."""
    import numpy as np
    import PIL.Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = PIL.Image.fromarray(np.clip(values * (255.0 / scale), 0, 255).round().astype(np.uint8))
    return image.convert("RGB")
