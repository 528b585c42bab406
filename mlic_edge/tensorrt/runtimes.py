"""The two TensorRT runtimes mlic-edge builds and runs engines with, and every difference between them.

* **TensorRT 10/11** (`tensorrt`): datacenter GPUs and Jetson. An engine is built on the GPU that
  runs it (tactics are timed there; a timing cache file makes later builds fast) and is tied to
  that GPU's compute capability and the TensorRT version.
* **TensorRT for RTX** (`tensorrt_rtx`, wheel `tensorrt-rtx-cu13`): RTX workstations and laptops.
  Its builder needs no GPU: it compiles ahead of time for a list of compute capabilities (default
  8.0, 8.6, 8.9, 12.0) and the engine is specialised just in time on the GPU that runs it. The JIT
  step is cached in a runtime cache (IRuntimeCache), which we persist next to the engine, one
  file per GPU, so it happens once. No timing cache (using one makes its builder query a GPU).
  Strongly typed only (no network flags). Its Python plugin API is not usable in 1.7 (see
  `plugin_support`).

Everything else (Builder, OnnxParser, profiles, build_serialized_network, Runtime, tensor-name
I/O, execute_async_v3) is one API, written once in `export/engine.py` and
`runtime/tensorrt_backend.py`. This module imports neither runtime until asked.
"""
from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.capabilities import ENGINE_RUNTIMES, RUNTIME_CHOICES, EngineRuntime
from ..core.errors import BackendUnavailable, ConfigError, one_line

log = logging.getLogger(__name__)

TENSORRT, TENSORRT_RTX = tuple(ENGINE_RUNTIMES)
RTX_TARGETS = ENGINE_RUNTIMES[TENSORRT_RTX].runs_on
RTX_SUPPORT_NOTE = ("TensorRT for RTX supports Turing, Ampere, Ada and Blackwell GPUs "
                    f"(compute capability {', '.join(RTX_TARGETS)}); on other GPUs (e.g. H100/H200, 9.0) "
                    f"build with --runtime tensorrt")


@dataclass(frozen=True)
class TensorRTRuntime:
    """One imported TensorRT flavour: its module plus what differs between the two."""

    name: str          # "tensorrt" | "tensorrt-rtx"
    trt: Any           # the imported module

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    @property
    def capability(self) -> EngineRuntime:
        return ENGINE_RUNTIMES[self.name]

    @property
    def label(self) -> str:
        return f"{self.capability.label} {self.version}"

    @property
    def is_rtx(self) -> bool:
        return self.name == TENSORRT_RTX

    @property
    def builds_without_gpu(self) -> bool:
        return self.capability.builds_without_gpu

    @property
    def uses_timing_cache(self) -> bool:
        return not self.is_rtx

    def logger(self, verbose: bool = False):
        trt = self.trt
        severity = trt.Logger.Severity.VERBOSE if verbose else trt.Logger.Severity.WARNING
        return trt.Logger(severity)

    # ------------------------------------------------------------------ build side
    def network_flags(self, irpe_plugin: bool) -> tuple[int, list[str]]:
        """(create_network flags, their names). TensorRT 10 opts in to strong typing (precision
        from the graph); in TensorRT 11 and for RTX every network is strongly typed, no flag."""
        trt = self.trt
        flags = {}
        if not self.is_rtx and int(self.version.split(".")[0]) < 11:
            flags["STRONGLY_TYPED"] = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
        if irpe_plugin:
            flags["PREFER_AOT_PYTHON_PLUGINS"] = trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS
        return sum(1 << int(flag) for flag in flags.values()), list(flags)

    def plugin_support(self) -> str | None:
        """None when the IRPEAttention plugin (Python plugin API, AOT PTX kernel) can be built with
        this runtime, else the reason, as a sentence that starts with the runtime's name."""
        trt = self.trt
        if not hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
            # Checked on 1.7.1: a Python IPluginV3 class does build without a GPU, but only with an
            # unversioned libtensorrt_rtx.so on LD_LIBRARY_PATH at process start (its ONNX parser
            # dlopens that name; the wheel ships .so.1), and it runs the kernel from Python.
            return (f"{self.label} has no ahead-of-time Python plugins (no PREFER_AOT_PYTHON_PLUGINS or "
                    f"IPluginV3QuickAOTBuild; its {self.capability.module}.plugin imports a module the wheel "
                    f"lacks), a Python IPluginV3 would run the kernel through Python at inference, and a "
                    f"plugin library needs C++ headers the wheels do not ship")
        try:
            import_plugin_api(self)
        except BackendUnavailable as e:
            return str(e)
        return None

    def set_targets(self, config, targets: tuple[str, ...] | None) -> tuple[str, ...]:
        """RTX: set the compute capabilities the engine is compiled for on the builder config.
        `targets` None = the portable set; ("current",) = the GPU of this machine. Returns what was
        set. TensorRT 10/11 builds for the GPU it runs on: nothing to set."""
        if not self.is_rtx:
            return ()
        trt = self.trt
        targets = targets or self.capability.portable_default
        capability = trt.ComputeCapability
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            member = capability.CURRENT if target == "current" else getattr(capability, "SM" + target.replace(".", ""))
            if not config.set_compute_capability(member, index):
                raise ConfigError(f"{self.label} refused compute capability {target}")
        return tuple(targets)

    # ------------------------------------------------------------------ run side
    def execution_context(self, engine, runtime_cache: Path | None):
        """(context, runtime cache or None). RTX: the JIT runtime cache is loaded from
        `runtime_cache` (a mismatching or corrupt file is ignored with a warning) and attached."""
        if not self.is_rtx:
            return engine.create_execution_context(), None
        config = engine.create_runtime_config()
        cache = config.create_runtime_cache()
        if runtime_cache is not None and runtime_cache.is_file():
            if not cache.deserialize(runtime_cache.read_bytes()):
                log.warning("runtime cache %s does not match this GPU/driver/TensorRT for RTX; "
                            "kernels are compiled again and the file replaced", runtime_cache)
        config.set_runtime_cache(cache)
        return engine.create_execution_context(config), (config, cache)


def runtime_cache_path(engine_path: Path, gpu: dict[str, Any]) -> Path:
    """model.engine -> model.engine.<gpu>-sm<cc>.rtxcache: the JIT kernels of one GPU model."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu.get("name", "gpu"))).strip("-").lower()
    cc = str(gpu.get("compute_capability", "")).replace(".", "")
    return engine_path.with_name(f"{engine_path.name}.{slug}-sm{cc}.rtxcache")


def import_runtime(name: str) -> TensorRTRuntime:
    """The runtime `name`, or BackendUnavailable naming how to install it. The registry's
    tensorrt wheels are stubs that fetch the libraries at install time, so a broken install can
    fail with any exception."""
    if name not in ENGINE_RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {name!r}")
    runtime = ENGINE_RUNTIMES[name]
    try:
        module = importlib.import_module(runtime.module)
        str(module.__version__)
    except Exception as e:  # ImportError, OSError (missing libraries), RuntimeError from stubs
        reason = one_line(e, 160)
        raise BackendUnavailable(f"{runtime.label} is not installed or not loadable here ({reason}); "
                                 f"{runtime.install}") from None
    return TensorRTRuntime(name, module)


def choose_runtime(request: str = "auto", gpu: dict[str, Any] | None = None) -> TensorRTRuntime:
    """auto: TensorRT where it imports and a GPU exists (it builds on the GPU), otherwise
    TensorRT for RTX (builds without one). An explicit name is imported or fails."""
    if request != "auto":
        return import_runtime(request)
    reasons = []
    if gpu is not None:
        try:
            return import_runtime(TENSORRT)
        except BackendUnavailable as e:
            reasons.append(str(e))
    else:
        reasons.append("TensorRT needs a CUDA GPU to build and none is visible")
    try:
        return import_runtime(TENSORRT_RTX)
    except BackendUnavailable as e:
        reasons.append(str(e))
    raise BackendUnavailable("no TensorRT runtime can build here: " + "; ".join(reasons))


def parse_targets(text: str | None) -> tuple[str, ...] | None:
    """--compute-capability: None/"portable" -> None (RTX's default set); "current"; or a list
    "8.6,8.9" / "sm86,sm89" / "86,89"."""
    if text is None or text.strip().lower() in ("", "portable", "default"):
        return None
    if text.strip().lower() == "current":
        return ("current",)
    targets = []
    for item in text.split(","):
        digits = item.strip().lower().removeprefix("sm").replace("_", "")
        value = digits if "." in digits else (f"{digits[:-1]}.{digits[-1]}" if len(digits) >= 2 else digits)
        if value not in RTX_TARGETS:
            raise ConfigError(f"--compute-capability: {item.strip()!r} is not a TensorRT for RTX target "
                              f"(portable, current, or a list of {', '.join(RTX_TARGETS)})")
        if value not in targets:
            targets.append(value)
    return tuple(targets)


def import_plugin_api(runtime: TensorRTRuntime):
    """TensorRT's Python plugin API (`tensorrt.plugin`, TensorRT >= 10.14). The 10.12/10.13
    wheels ship the same package only as `tensorrt_bindings.plugin`: fall back to it."""
    base = runtime.capability.module
    errors = []
    for module in (f"{base}.plugin", f"{base}_bindings.plugin"):
        try:
            return importlib.import_module(module)
        except ImportError as e:
            errors.append(f"{module}: {e}")
    raise BackendUnavailable(f"the IRPEAttention plugin needs TensorRT's Python plugin API "
                             f"(TensorRT >= 10.14: tensorrt.plugin); {runtime.label} has none "
                             f"({'; '.join(errors)})")
