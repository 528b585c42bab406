"""The JSON sidecar `<engine>.json` of every TensorRT engine we build (no tensorrt import needed).

Why a sidecar: a serialized engine carries no metadata we can read without deserializing it on
a matching GPU and TensorRT version, and it is useless anywhere else. The sidecar holds the
model's ModelMetadata (classes, preprocessing, thresholds: copied from the ONNX it was built
from) plus what the engine is tied to, so that

* `build-engine` can reuse an engine whose key (ONNX sha256, runtime and its version, target
  compute capabilities, build GPU for TensorRT 10/11, precision, batch profile) matches instead of
  rebuilding it (minutes on large models), and
* the runtime can refuse a foreign engine with a clear message before TensorRT fails cryptically.

Two runtimes write engines (see `tensorrt.runtimes`): TensorRT 10/11 builds on and for one GPU
(`gpu`, `compute_capabilities` = its one); TensorRT for RTX builds without a GPU (`gpu` None) for
a list of compute capabilities.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.capabilities import ENGINE_RUNTIMES
from ..core.errors import BackendUnavailable, ModelFileError
from ..core.metadata import ModelMetadata

ENGINE_INFO_FORMAT = "mlic-edge-engine/2"
_FORMAT_1 = "mlic-edge-engine/1"   # TensorRT 10/11 only: read as runtime "tensorrt"


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """model.engine -> model.engine.json"""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


@dataclass
class EngineInfo:
    metadata: ModelMetadata
    runtime: str                        # "tensorrt" | "tensorrt-rtx"
    runtime_version: str                # e.g. "11.4.0.106", "1.7.1.116"
    compute_capabilities: list[str]     # what the engine runs on: ["9.0"]; RTX ["8.0", "8.6", ...]
    gpu: dict[str, Any] | None          # the build GPU {"name", "compute_capability", "memory_gb"}; None: RTX on a CPU
    onnx_sha256: str
    precision: str                      # fp32 | fp16 | int8 (the ONNX graph's; strongly typed)
    profile: dict[str, int] | None      # {"min", "opt", "max"} batch; None = static-batch graph
    onnx_path: str = ""
    checkpoint: str | None = None       # the .pt the ONNX was exported from, when build-engine knew it
    build: dict[str, Any] = field(default_factory=dict)  # workspace, timing cache, seconds, ...
    format: str = ENGINE_INFO_FORMAT

    def cache_key(self) -> dict[str, Any]:
        """What must match for an existing engine to be reused (see `same_build`)."""
        key = {"onnx_sha256": self.onnx_sha256, "runtime": self.runtime,
               "runtime_version": self.runtime_version, "compute_capabilities": list(self.compute_capabilities),
               "precision": self.precision, "profile": self.profile}
        if ENGINE_RUNTIMES[self.runtime].runs_on is None:   # tactics tuned on the build GPU model
            key["gpu"] = (self.gpu or {}).get("name")
        return key

    @property
    def runtime_label(self) -> str:
        return f"{ENGINE_RUNTIMES[self.runtime].label} {self.runtime_version}"

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
    if isinstance(data, dict) and data.get("format") == _FORMAT_1:
        gpu = data.get("gpu") or {}
        data.update(format=ENGINE_INFO_FORMAT, runtime="tensorrt", runtime_version=data.pop("tensorrt_version", ""),
                    compute_capabilities=[gpu.get("compute_capability")])
    if not isinstance(data, dict) or data.get("format") != ENGINE_INFO_FORMAT:
        raise ModelFileError(f"{side}: not an mlic-edge engine sidecar (format "
                             f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("runtime") not in ENGINE_RUNTIMES:
        raise ModelFileError(f"{side}: unknown runtime {data.get('runtime')!r} (expected one of "
                             f"{', '.join(ENGINE_RUNTIMES)})")
    return EngineInfo.from_dict(data, source=str(side))


def write_engine_info(engine_path: str | os.PathLike, info: EngineInfo) -> Path:
    from ..core.files import atomic_write_text

    side = sidecar_path(engine_path)
    atomic_write_text(side, info.to_json() + "\n")
    return side


def same_build(existing: EngineInfo, wanted: EngineInfo) -> bool:
    return existing.cache_key() == wanted.cache_key()


def check_engine_compatible(info: EngineInfo, engine_path: str | os.PathLike,
                            runtime_version: str, gpu: dict[str, Any] | None) -> None:
    """Raise BackendUnavailable when the engine cannot run here: serialized engines are tied to
    the runtime's version and to the compute capabilities they were built for."""
    rebuild = (f"rebuild it here: mlic-edge build-engine {info.onnx_path or '<model.onnx>'} "
               f"--out {engine_path}")
    if gpu is None:
        raise BackendUnavailable(f"{engine_path}: TensorRT engines need a CUDA GPU and none is visible"
                                 + (" (TensorRT for RTX builds without one, but runs on one)"
                                    if ENGINE_RUNTIMES[info.runtime].builds_without_gpu else ""))
    here_cc = gpu.get("compute_capability")
    targets = ", ".join(str(c) for c in info.compute_capabilities)
    built_on = f"{info.runtime_label} for compute capability {targets}"
    here = f"{gpu.get('name')} (compute capability {here_cc})"
    if info.runtime_version != runtime_version:
        raise BackendUnavailable(f"{engine_path}: built with {built_on}; this machine has "
                                 f"{ENGINE_RUNTIMES[info.runtime].label} {runtime_version}; {rebuild}")
    if here_cc not in info.compute_capabilities:
        runs_on = ENGINE_RUNTIMES[info.runtime].runs_on
        if runs_on is not None:
            from .runtimes import RTX_SUPPORT_NOTE
            hint = (f"rebuild with --compute-capability {here_cc}" if here_cc in runs_on
                    else RTX_SUPPORT_NOTE)
            raise BackendUnavailable(f"{engine_path}: built with {built_on}; this GPU is {here}: {hint}")
        raise BackendUnavailable(f"{engine_path}: built with {built_on} on {(info.gpu or {}).get('name')}; "
                                 f"this GPU is {here}; {rebuild}")
