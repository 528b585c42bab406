"""The JSON sidecar `<engine>.json` of every TensorRT engine we build (no tensorrt import needed).

Why a sidecar: a serialized engine carries no metadata we can read without deserializing it on
a matching GPU and TensorRT version, and it is useless anywhere else. The sidecar holds the
model's ModelMetadata (classes, preprocessing, thresholds: copied from the ONNX it was built
from) plus what the engine is tied to, so that

* `build-engine` can reuse an engine whose key (ONNX sha256, TensorRT version, GPU, precision,
  batch profile) matches instead of rebuilding it (minutes on large models), and
* the runtime can refuse a foreign engine with a clear message before TensorRT fails cryptically.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, ModelFileError
from .metadata import ModelMetadata

ENGINE_INFO_FORMAT = "mlic-edge-engine/1"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """model.engine -> model.engine.json"""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


@dataclass
class EngineInfo:
    metadata: ModelMetadata
    tensorrt_version: str
    gpu: dict[str, Any]                 # {"name", "compute_capability": "9.0", "memory_gb"}
    onnx_sha256: str
    precision: str                      # fp32 | fp16 | int8 (the ONNX graph's; strongly typed)
    profile: dict[str, int] | None      # {"min", "opt", "max"} batch; None = static-batch graph
    onnx_path: str = ""
    checkpoint: str | None = None       # the .pt the ONNX was exported from, when build-engine knew it
    build: dict[str, Any] = field(default_factory=dict)  # workspace, timing cache, seconds, ...
    format: str = ENGINE_INFO_FORMAT

    def cache_key(self) -> dict[str, Any]:
        """What must match for an existing engine to be reused (see `same_build`)."""
        return {"onnx_sha256": self.onnx_sha256, "tensorrt_version": self.tensorrt_version,
                "gpu": self.gpu.get("name"), "compute_capability": self.gpu.get("compute_capability"),
                "precision": self.precision, "profile": self.profile}

    def to_json(self) -> str:
        data = asdict(self)
        data["metadata"] = json.loads(self.metadata.to_json())
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> "EngineInfo":
        try:
            meta = ModelMetadata.from_json(json.dumps(data.pop("metadata")), source=source)
            return cls(metadata=meta, **data)
        except (KeyError, TypeError) as e:
            raise ModelFileError(f"{source}: malformed engine sidecar ({e})") from None


def read_engine_info(engine_path: str | os.PathLike) -> EngineInfo:
    """EngineInfo of an engine from its sidecar; one-line ModelFileError when missing/malformed."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ModelFileError(f"{engine_path}: no sidecar {side.name} (classes, preprocessing, "
                             f"thresholds); build engines with `mlic-edge build-engine`")
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{side}: unreadable engine sidecar ({e})") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_INFO_FORMAT:
        raise ModelFileError(f"{side}: not an mlic-edge engine sidecar (format "
                             f"{data.get('format') if isinstance(data, dict) else None!r})")
    return EngineInfo.from_dict(data, source=str(side))


def write_engine_info(engine_path: str | os.PathLike, info: EngineInfo) -> Path:
    from .files import atomic_write_text

    side = sidecar_path(engine_path)
    atomic_write_text(side, info.to_json() + "\n")
    return side


def same_build(existing: EngineInfo, wanted: EngineInfo) -> bool:
    return existing.cache_key() == wanted.cache_key()


def check_engine_compatible(info: EngineInfo, engine_path: str | os.PathLike,
                            tensorrt_version: str, gpu: dict[str, Any] | None) -> None:
    """Raise BackendUnavailable when the engine cannot run here: serialized engines are tied to
    the TensorRT version and to the GPU's compute capability they were built with."""
    rebuild = (f"rebuild it here: mlic-edge build-engine {info.onnx_path or '<model.onnx>'} "
               f"--out {engine_path}")
    if gpu is None:
        raise BackendUnavailable(f"{engine_path}: TensorRT engines need a CUDA GPU and none is visible")
    built_on = f"TensorRT {info.tensorrt_version} on {info.gpu.get('name')} " \
               f"(compute capability {info.gpu.get('compute_capability')})"
    here = f"TensorRT {tensorrt_version} on {gpu.get('name')} " \
           f"(compute capability {gpu.get('compute_capability')})"
    if info.tensorrt_version != tensorrt_version or \
            info.gpu.get("compute_capability") != gpu.get("compute_capability"):
        raise BackendUnavailable(f"{engine_path}: built with {built_on}; this machine has {here}; {rebuild}")
