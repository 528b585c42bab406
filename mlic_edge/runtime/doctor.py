"""`mlic-edge doctor`: what is installed here and which model formats, engine runtimes, ONNX
Runtime providers and devices this machine can run, row by row from the capability table
(`core.capabilities`), so its report lists exactly what the commands accept.

Why: a deployment problem is usually an environment problem (onnxruntime without its CUDA
provider, a TensorRT stub wheel, an engine built for another GPU). Every probe is guarded: a
broken package is reported, never raised, and torch is optional.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

from ..core.capabilities import DEVICE_KINDS, ENGINE_RUNTIMES, MODEL_FORMATS, PRECISIONS


def package_version(*names: str) -> str | None:
    """Installed version of the first of `names` (alternative distributions of one package)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _probe_torch() -> dict[str, Any]:
    info: dict[str, Any] = {"version": package_version("torch")}
    from .torch_backend import import_torch
    try:
        torch = import_torch()
    except Exception as e:  # not installed, or broken
        info["error"] = f"{type(e).__name__}: {e}"[:160]
        return info
    info.update(version=torch.__version__, cuda_build=torch.version.cuda, cuda=torch.cuda.is_available())
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _probe_onnxruntime() -> dict[str, Any]:
    info: dict[str, Any] = {"version": package_version("onnxruntime", "onnxruntime-gpu")}
    try:
        import onnxruntime as ort
    except Exception as e:
        info["error"] = f"{type(e).__name__}: {e}"[:160]
        return info
    from ..core.onnxruntime import provider_problem

    providers = ort.get_available_providers()
    info.update(version=ort.__version__, providers=providers, device=ort.get_device(),
                provider_problems={p: _guarded(provider_problem, p) for p in providers})
    return info


def _guarded(probe, *args) -> Any:
    """A probe's answer, or its error as a line: doctor reports a broken package, never raises."""
    try:
        return probe(*args)
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:200]


def _probe_tensorrt(name: str) -> dict[str, Any]:
    """One TensorRT runtime: version, or the import error; and whether it takes the iRPE plugin."""
    from ..tensorrt.runtimes import import_runtime

    info: dict[str, Any] = {"version": package_version(*ENGINE_RUNTIMES[name].packages)}
    try:
        runtime = import_runtime(name)
    except Exception as e:
        info["error"] = str(e)[:200]
        return info
    info["version"] = runtime.version
    info["irpe_plugin"] = runtime.plugin_support() or "yes"
    return info


def collect() -> dict[str, Any]:
    """Everything `doctor` prints, as a dict (also its --json)."""
    from ..core.gpu import cuda_device_count, cuda_driver_version, gpu_info

    report: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "mlic_edge": package_version("mlic-edge"),
        "packages": {name: package_version(name) for name in ("numpy", "pillow", "timm", "onnx", "onnx-graphsurgeon",
                                                       "nvidia-modelopt", "cuda-bindings", "triton",
                                                       "onnxruntime-extensions")},
        "torch": _probe_torch(), "onnxruntime": _probe_onnxruntime(), "tensorrt": _probe_tensorrt("tensorrt"),
        "tensorrt_rtx": _probe_tensorrt("tensorrt-rtx"),
    }
    gpus = []
    try:
        gpus = [gpu for index in range(cuda_device_count()) if (gpu := gpu_info(index)) is not None]
    except Exception as e:
        report["gpu_error"] = str(e)[:160]
    report["gpus"] = gpus
    report["cuda_driver"] = cuda_driver_version()
    report["runtimes"] = _runtime_rows(report)
    report["providers"] = _provider_rows(report)
    report["formats"] = _format_rows(report)
    report["devices"] = _device_rows(report)
    report["precisions"] = [{"precision": p.name, "about": p.about, "parity_limit": p.parity_limit}
                            for p in PRECISIONS.values()]
    return report


def _runtime_probe(report: dict[str, Any], name: str) -> dict[str, Any]:
    return report.get(name.replace("-", "_"), {"error": "not probed"})


def _runtime_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per TensorRT runtime of the table: installed, builds here, runs here, and why not."""
    ccs = {g["compute_capability"] for g in report["gpus"]}
    rows = []
    for runtime in ENGINE_RUNTIMES.values():
        probe = _runtime_probe(report, runtime.name)
        installed = "error" not in probe
        runs_on_gpu = bool(ccs) and (runtime.runs_on is None or bool(ccs & set(runtime.runs_on)))
        if not installed:
            note = probe["error"] if "pip install" in probe["error"] else f"{probe['error']} ({runtime.install})"
        elif not ccs:
            note = "no CUDA GPU" + ("; builds without one" if runtime.builds_without_gpu else "")
        elif not runs_on_gpu:
            note = f"no GPU of compute capability {', '.join(runtime.runs_on or ())}"
        else:
            note = ""
        rows.append({"runtime": runtime.name, "label": runtime.label, "installed": installed,
                     "builds": installed and (runtime.builds_without_gpu or bool(ccs)),
                     "runs": installed and runs_on_gpu, "runs_on": list(runtime.runs_on or ["the build GPU"]),
                     "irpe_plugin": probe.get("irpe_plugin"),
                     "note": note})
    return rows


def _provider_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ONNX Runtime provider of this build: whether it really loads here, else why."""
    ort = report["onnxruntime"]
    gpu = bool(report["gpus"])
    rows = []
    for provider, problem in (ort.get("provider_problems") or {}).items():
        if problem is None and provider != "CPUExecutionProvider" and not gpu:
            problem = "its library loads, but no CUDA GPU is visible"
        rows.append({"provider": provider, "loads": problem is None, "why": problem or ""})
    return rows


def _format_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model format: its backend, the devices that apply, and whether it runs here."""
    ort, torch = report["onnxruntime"], report["torch"]
    engines = [r for r in report["runtimes"] if r["runs"]]
    usable = {"onnx": ("error" not in ort, ort.get("error", "")),
              "engine": (bool(engines), "; ".join(f"{r['runtime']}: {r['note']}" for r in report["runtimes"])),
              "checkpoint": ("error" not in torch, torch.get("error", ""))}
    rows = []
    for fmt in MODEL_FORMATS.values():
        ok, why = usable.get(fmt.name, (False, "not probed"))
        rows.append({"format": fmt.name, "suffixes": list(fmt.suffixes), "backend": fmt.backend,
                     "devices": [d.name for d in DEVICE_KINDS.values() if fmt.name in d.formats],
                     "written_by": fmt.written_by, "ok": ok,
                     "note": "" if ok else why if "pip install" in why else f"{why} ({fmt.install})"})
    plugin = report["packages"].get("onnxruntime-extensions") is not None and "error" not in ort
    onnx_row = next(row for row in rows if row["format"] == "onnx")
    onnx_row["irpe_plugin_graphs"] = plugin
    if not plugin:   # graphs exported with --irpe-plugin need the reference op
        onnx_row["note"] = "; ".join(filter(None, [onnx_row["note"], "IRPEAttention plugin graphs: "
                                                   "pip install 'mlic-edge[plugin]'"]))
    return rows


def _device_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per --device kind: the formats it applies to, and whether it has a device here."""
    gpu = bool(report["gpus"])
    loads = {r["provider"]: r["loads"] for r in report["providers"]}
    cuda_any = gpu and (loads.get("CUDAExecutionProvider", False) or report["torch"].get("cuda", False)
                        or any(r["runs"] for r in report["runtimes"]))
    usable = {"auto": (True, ""), "cpu": (True, ""),
              "cuda": (cuda_any, "" if cuda_any else "no CUDA GPU" if not gpu else "no runtime here uses it"),
              "tensorrt": (loads.get("TensorrtExecutionProvider", False),
                           next((r["why"] for r in report["providers"]
                                 if r["provider"] == "TensorrtExecutionProvider"), "not in this onnxruntime build"))}
    return [{"device": kind.name + (":N" if kind.indexed else ""), "about": kind.about, "formats": list(kind.formats),
             "ok": usable[kind.name][0], "note": "" if usable[kind.name][0] else usable[kind.name][1]}
            for kind in DEVICE_KINDS.values()]


def print_report(report: dict[str, Any], console=None) -> None:
    from ..core.console import make_console
    from rich.markup import escape
    from rich.table import Table

    console = console or make_console()
    table = Table(title="mlic-edge doctor", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    torch, ort, trt = report["torch"], report["onnxruntime"], report["tensorrt"]
    rows = [("python", f"{report['python']} ({report['platform']})"),
            ("mlic-edge", report["mlic_edge"] or "not installed as a package (source checkout)")]
    rows += [(name, value or "-") for name, value in report["packages"].items()]
    rows.append(("torch", torch.get("error") or
                 f"{torch['version']} (CUDA build {torch.get('cuda_build') or '-'}, "
                 f"GPU {'yes' if torch.get('cuda') else 'no'})"))
    rows.append(("onnxruntime", ort.get("error") or f"{ort['version']}; providers: {', '.join(ort['providers'])}"))
    rows.append(("tensorrt", trt.get("error") or trt["version"]))
    rtx = report.get("tensorrt_rtx", {})
    rows.append(("tensorrt-rtx", rtx.get("error") or rtx.get("version")))
    rows.append(("CUDA driver", report["cuda_driver"] or "-"))
    for gpu in report["gpus"] or [None]:
        rows.append(("GPU", f"{gpu['index']}: {gpu['name']} (compute capability {gpu['compute_capability']}, "
                            f"{gpu['memory_gb']} GiB)" if gpu else "none visible"))
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.print(table)
    _print_rows(console, "model formats", report["formats"], ("format", "backend", "devices", "ok", "note"))
    _print_rows(console, "TensorRT runtimes", report["runtimes"], ("runtime", "builds", "runs", "runs_on", "note"))
    _print_rows(console, "ONNX Runtime providers", report["providers"], ("provider", "loads", "why"))
    _print_rows(console, "devices (--device)", report["devices"], ("device", "formats", "ok", "note"))
    _print_rows(console, "precisions", report["precisions"], ("precision", "parity_limit", "about"))


def _print_rows(console, title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    from rich.markup import escape

    if isinstance(value, bool):
        return "[green]yes[/green]" if value else "[red]no[/red]"
    if isinstance(value, (list, tuple)):
        return escape(", ".join(map(str, value)))
    return escape(str(value))
