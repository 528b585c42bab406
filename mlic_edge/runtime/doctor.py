"""`mlic-edge doctor`: what is installed here and which backends/precisions this machine can run.

Why: a deployment problem is usually an environment problem (onnxruntime without its CUDA
provider, a TensorRT stub wheel, an engine built for another GPU). Every probe is guarded: a
broken package is reported, never raised, and torch is optional.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any


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
    info.update(version=ort.__version__, providers=ort.get_available_providers(), device=ort.get_device())
    return info


_RUNTIME_PACKAGES = {"tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
                     "tensorrt-rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx")}


def _probe_tensorrt(name: str) -> dict[str, Any]:
    """One TensorRT runtime: version, or the import error; and whether it takes the iRPE plugin."""
    from ..tensorrt.runtimes import import_runtime

    info: dict[str, Any] = {"version": package_version(*_RUNTIME_PACKAGES[name])}
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
    report["backends"] = _capabilities(report)
    return report


def _capabilities(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per backend: can it run here, on what, which precisions (of our exported files)."""
    gpu = bool(report["gpus"])
    ort = report["onnxruntime"]
    providers = ort.get("providers") or []
    rows = [{"backend": "onnxruntime (CPU)", "ok": "error" not in ort,
             "precisions": "fp32, fp16 (casts where CPU kernels lack fp16), int8 (Q/DQ), int8-cpu",
             "note": ort.get("error", "")}]
    cuda_ok = "CUDAExecutionProvider" in providers and gpu
    rows.append({"backend": "onnxruntime (CUDA)", "ok": cuda_ok, "precisions": "fp32, fp16" if cuda_ok else "",
                 "note": "" if cuda_ok else ("no CUDA GPU" if "CUDAExecutionProvider" in providers
                                             else "needs onnxruntime-gpu")})
    from ..tensorrt.runtimes import RTX_TARGETS

    typed = "fp32, fp16, int8 (strongly typed: the ONNX graph's own types)"
    trt = report["tensorrt"]
    trt_ok = "error" not in trt and gpu
    rows.append({"backend": "tensorrt (.engine): build + run", "ok": trt_ok, "precisions": typed if trt_ok else "",
                 "note": trt.get("error", "") if "error" in trt else ("" if gpu else "no CUDA GPU")})
    rtx = report.get("tensorrt_rtx", {"error": "not probed"})
    rows.append({"backend": "tensorrt-rtx (.engine): build (no GPU needed)", "ok": "error" not in rtx,
                 "precisions": typed if "error" not in rtx else "", "note": rtx.get("error", "")})
    rtx_gpus = [g for g in report["gpus"] if g["compute_capability"] in RTX_TARGETS]
    rtx_run = "error" not in rtx and bool(rtx_gpus)
    rows.append({"backend": "tensorrt-rtx (.engine): run", "ok": rtx_run, "precisions": typed if rtx_run else "",
                 "note": rtx.get("error", "") if "error" in rtx else "" if rtx_run else
                 ("no CUDA GPU" if not gpu else f"no GPU of compute capability {', '.join(RTX_TARGETS)}")})
    plugin_ort = report["packages"].get("onnxruntime-extensions") is not None and "error" not in ort
    rows.append({"backend": "onnxruntime (IRPEAttention plugin graphs)", "ok": plugin_ort,
                 "precisions": "fp32, fp16, int8 (the plugin node runs as a numpy reference op)" if plugin_ort else "",
                 "note": "" if plugin_ort else "needs onnxruntime-extensions: pip install 'mlic-edge[plugin]'"})
    torch = report["torch"]
    rows.append({"backend": "torch (.pt)", "ok": "error" not in torch,
                 "precisions": "fp32" + (" on CPU and CUDA" if torch.get("cuda") else " on CPU"),
                 "note": torch.get("error", "")})
    return rows


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
    backends = Table(title="backends on this machine")
    for column in ("backend", "usable", "precisions", "note"):
        backends.add_column(column)
    for row in report["backends"]:
        backends.add_row(row["backend"], "[green]yes[/green]" if row["ok"] else "[red]no[/red]",
                         escape(row["precisions"]), escape(row["note"]))
    console.print(backends)
