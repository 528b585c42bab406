"""mlic-edge: multi-label image classification (iRPE Transformer + APL) from training to the edge.

The whole path in Python; each call takes the CLI's options as keyword arguments, returns a
result object and raises an `MLICError` (one-line message) on bad input:

    import mlic_edge
    run = mlic_edge.train(data="folder", data_root="my_data/", out="runs/mine")      # TrainResult
    scores = mlic_edge.evaluate(run.best, data="folder", data_root="my_data/")       # EvalResult
    onnx = mlic_edge.export(run.best, "model.fp16.onnx", precision="fp16")           # ExportResult
    report = mlic_edge.parity(run.best, [onnx.path], data="folder", data_root="my_data/")
    report.rows[0].delta_map, report.passed                                          # ParityReport
    engine = mlic_edge.build_engine(onnx.path)                                       # BuildResult
    with mlic_edge.load("model.fp16.onnx") as tagger:                                # Tagger
        tagger.predict(["a.jpg", pil_image, hwc_uint8_array])[0].labels

`train`, `export` and `parity` are also the packages of those stages: calling one runs its
stage (`core.callable_module`). Importing this package imports nothing heavy (no numpy, no
torch); each call imports what it needs.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .export.engine import BuildResult
    from .runtime.tagger import Tagger
    from .train.results import EvalResult

# The stages that are called as functions; imported on first use to keep this import cheap.
_CALLABLE_STAGES = ("train", "export", "parity")


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_STAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(model: Any, device: str = "auto", **options: Any) -> "Tagger":
    """A `Tagger` for a model file (.onnx, .engine/.plan/.trt, .pt): `predict(inputs)` and
    `stream(video)`. device: auto | cpu | cuda | cuda:N | tensorrt. Options: batch_size, workers,
    threshold (one for every class instead of the model's per-class thresholds), and the
    backend's own (ONNX Runtime: threads=N; TensorRT: cuda_graph=True). See `mlic_edge.runtime.tagger`.
    A server URL (http://host:8000/name or grpc://host:8001/name, from `mlic-edge serve`) gives a
    `RemoteTagger` (runtime/remote.py) with the same predict(); its options: concurrency (requests
    in flight), timeout_s, wait_s (how long to wait for the server and model to be ready)."""
    from .runtime.api import load as load_tagger

    return load_tagger(model, device=device, **options)


def evaluate(checkpoint: Any, **options: Any) -> "EvalResult":
    """Score a checkpoint on a dataset split: `mlic-edge eval` as a call (`train.api.evaluate`)."""
    from .train.api import evaluate as evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, **options)


def build_engine(source: Any, out: Any = None, **options: Any) -> "BuildResult":
    """A TensorRT engine and its sidecar from a checkpoint or ONNX graph: `mlic-edge build-engine`
    as a call (`export.engine.build_engine`)."""
    from .export.engine import build_engine as build

    return build(source, out, **options)


__all__ = ["__version__", "build_engine", "evaluate", "export", "load", "parity", "train"]
