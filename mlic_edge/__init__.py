"""mlic-edge: multi-label image classification (iRPE Transformer + APL) from training to the edge.

    import mlic_edge
    tagger = mlic_edge.load("best.fp16.engine")           # or .onnx / .pt
    preds = tagger.predict(["a.jpg", pil_image, hwc_uint8_array])
    preds[0].labels, preds[0].scores                      # ["dog", "person"], {"dog": 0.93, ...}

Subpackages mirror the stages: `model`, `data`, `train`, `export`, `runtime` (which imports
without torch, for edge devices). Importing this package imports nothing heavy: numpy and the
model's runtime come with the first `load`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .runtime.tagger import Tagger


def load(model: Any, device: str = "auto", **options: Any) -> "Tagger":
    """A `Tagger` for a model file (.onnx, .engine/.plan/.trt, .pt): `predict(inputs)` and
    `stream(video)`. device: auto | cpu | cuda | cuda:N | tensorrt. Options: batch_size, workers,
    threshold (one for every class instead of the model's per-class thresholds), and the
    backend's own (ONNX Runtime: threads=N; TensorRT: cuda_graph=True). See `mlic_edge.runtime.tagger`.
    A server URL (http://host:8000/name or grpc://host:8001/name, from `mlic-edge serve`) gives a
    `RemoteTagger` (runtime/remote.py) with the same predict()."""
    from .runtime.api import load as load_tagger

    return load_tagger(model, device=device, **options)
__all__ = ["__version__", "load"]
