"""What works with what, in one table: model file formats, the backends that run them, precisions,
export targets, the two TensorRT runtimes, device kinds, and each precision's parity limit.

Every command, `doctor`, the server, the Triton repository writer and the docs' support matrix
read these tables; nothing else spells out a suffix, a precision or a runtime. Importable without
numpy or torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ModelFileError


@dataclass(frozen=True)
class Precision:
    """A numeric format of an exported graph."""

    name: str
    parity_limit: float      # |delta mAP| in mAP points that `parity` passes by default
    about: str


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", 0.01, "float32 everywhere"),
    Precision("fp16", 0.1, "mixed: LayerNorm, Softmax and reductions kept in float32"),
    Precision("int8", 1.0, "calibrated int8 activations and weights (Q/DQ or ONNX Runtime's CPU kernels)"),
)}


@dataclass(frozen=True)
class ExportTarget:
    """Who an exported graph is made for: the target decides the int8 graph's form."""

    name: str
    about: str
    engine_ok: bool          # whether build-engine takes a graph made for this target


EXPORT_TARGETS: dict[str, ExportTarget] = {t.name: t for t in (
    ExportTarget("tensorrt", "TensorRT (int8 as explicit Q/DQ pairs)", True),
    ExportTarget("cpu", "ONNX Runtime on CPUs (int8 as its integer kernels)", False),
)}


@dataclass(frozen=True)
class ModelFormat:
    """A kind of model file: its suffixes, the backend that runs it and where its metadata lives."""

    name: str
    suffixes: tuple[str, ...]
    backend: str             # "onnxruntime" | "tensorrt" | "torch"
    metadata_in: str
    needs_gpu: bool
    written_by: str          # the command that writes it
    install: str             # what to install to run it


MODEL_FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("onnx", (".onnx",), "onnxruntime", "ONNX metadata_props", False, "mlic-edge export",
                "pip install 'mlic-edge[ort]' (or '[export]')"),
    ModelFormat("engine", (".engine", ".plan", ".trt"), "tensorrt", "<engine>.json sidecar", True,
                "mlic-edge build-engine", "pip install 'mlic-edge[trt]' or 'mlic-edge[rtx]'"),
    ModelFormat("checkpoint", (".pt", ".pth"), "torch", "inside the checkpoint", False, "mlic-edge train",
                "pip install mlic-edge (torch)"),
)}
SUFFIXES: dict[str, ModelFormat] = {s: f for f in MODEL_FORMATS.values() for s in f.suffixes}
ENGINE_SUFFIXES = MODEL_FORMATS["engine"].suffixes


def model_format(path: str | os.PathLike) -> ModelFormat:
    """The format of a model file, from its suffix; ModelFileError (one line) for any other file."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelFileError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected "
                             f"{', '.join(SUFFIXES)}")
    return SUFFIXES[suffix]


@dataclass(frozen=True)
class EngineRuntime:
    """One of the two TensorRT runtimes mlic-edge builds and runs engines with."""

    name: str
    module: str
    label: str
    install: str
    builds_without_gpu: bool
    runs_on: tuple[str, ...] | None     # compute capabilities; None: the GPU it was built on
    portable_default: tuple[str, ...]   # what a build targets unless told otherwise
    takes_plugins: bool                 # whether the IRPEAttention plugin builds here
    packages: tuple[str, ...]           # the pip distributions that bring it


ENGINE_RUNTIMES: dict[str, EngineRuntime] = {r.name: r for r in (
    EngineRuntime("tensorrt", "tensorrt", "TensorRT", "pip install 'mlic-edge[trt]' (JetPack: NVIDIA's TensorRT)",
                  False, None, (), True, ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")),
    # Targets from TensorRT for RTX's documentation: 7.5 on request, 12.1 is GB10.
    EngineRuntime("tensorrt-rtx", "tensorrt_rtx", "TensorRT for RTX", "pip install 'mlic-edge[rtx]'",
                  True, ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1"), ("8.0", "8.6", "8.9", "12.0"), False,
                  ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx")),
)}
RUNTIME_CHOICES = ("auto",) + tuple(ENGINE_RUNTIMES)
DEFAULT_BATCH_PROFILE = "1:8:32"   # an engine's MIN:OPT:MAX batch unless told otherwise


@dataclass(frozen=True)
class DeviceKind:
    """A value of --device, without its index."""

    name: str
    indexed: bool            # takes ':N'
    needs_gpu: bool
    formats: tuple[str, ...]  # model formats it applies to
    about: str


DEVICE_KINDS: dict[str, DeviceKind] = {d.name: d for d in (
    DeviceKind("auto", False, False, ("onnx", "engine", "checkpoint"), "a GPU when the backend can use one, else the CPU"),
    DeviceKind("cpu", False, False, ("onnx", "checkpoint"), "the CPU"),
    DeviceKind("cuda", True, True, ("onnx", "engine", "checkpoint"), "a CUDA GPU (cuda:N picks one)"),
    DeviceKind("tensorrt", False, True, ("onnx",), "ONNX Runtime's TensorRT execution provider"),
)}
TRAIN_DEVICE_KINDS = ("auto", "cpu", "cuda")


def precision_tag(precision: str, target: str) -> str:
    """The precision a file records: "int8-cpu" for an int8 graph made for ONNX Runtime's CPU
    kernels, else the precision itself."""
    return f"{precision}-cpu" if (precision == "int8" and target == "cpu") else precision


def precision_family(tag: str) -> str:
    """'int8-cpu' -> 'int8': the precision a recorded tag belongs to (its parity limit)."""
    return tag.split("-")[0]


def check_precision(name: str, what: str = "--precision") -> Precision:
    """The Precision named, or a one-line ConfigError listing the choices."""
    if name not in PRECISIONS:
        raise ConfigError(f"{what} {name!r}: expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def check_target(name: str, what: str = "--target") -> ExportTarget:
    """The ExportTarget named, or a one-line ConfigError listing the choices."""
    if name not in EXPORT_TARGETS:
        raise ConfigError(f"{what} {name!r}: expected one of {', '.join(EXPORT_TARGETS)}")
    return EXPORT_TARGETS[name]


def parity_limits() -> dict[str, float]:
    """The default |delta mAP| pass limit of each precision."""
    return {name: p.parity_limit for name, p in PRECISIONS.items()}
