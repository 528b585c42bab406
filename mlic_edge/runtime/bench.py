"""`mlic-edge bench`: latency percentiles and throughput per batch size, with PyTorch eager measured
in the same process as the baseline (same inputs, same host<->device copies, same timer kind), so
the printed ratios compare like with like.

Each timed call is one `backend.predict(batch)`: host float32 (B, 3, S, S) in, host logits out
(copies included, what an application sees). GPU backends time it with CUDA events recorded on
their stream (`timer: "cuda_events"`); CPU backends with time.perf_counter.

JSON written by --json (BENCH_JSON_KEYS; tests check them):

    {
      "format": "mlic-edge-bench/1",
      "model": path, "backend": "onnxruntime"|"tensorrt"|"torch", "device": str, "precision": str,
      "image_size": S, "warmup": N, "repeats": N, "timer": "cuda_events"|"perf_counter",
      "baseline": {"model": checkpoint, "backend": "torch", "device": str, "timer": str} | null,
      "results": [                                       # one per batch size
        {"batch": B,
         "model":    {"latency_ms": {"mean", "p50", "p90", "p99", "min", "max"}, "throughput_ips": img/s,
                      "samples_ms": [each timed call's ms, in order]},
         "baseline": same | null,
         "speedup_p50": baseline p50 / model p50 | null,      # > 1: the model is faster
         "throughput_ratio": model / baseline throughput | null}
      ],
      "notes": [str], "environment": {"python", "platform", "numpy", "onnxruntime", "torch",
                                      "tensorrt", "gpu"}
    }
"""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import ConfigError
from .backend import open_backend
from .base import Backend

BENCH_FORMAT = "mlic-edge-bench/1"
BENCH_JSON_KEYS = ("format", "model", "backend", "device", "precision", "image_size", "warmup", "repeats",
                   "timer", "baseline", "results", "notes", "environment")
RESULT_KEYS = ("batch", "model", "baseline", "speedup_p50", "throughput_ratio")
STATS_KEYS = ("latency_ms", "throughput_ips", "samples_ms")
LATENCY_KEYS = ("mean", "p50", "p90", "p99", "min", "max")


def parse_batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--batch-sizes must be comma-separated sizes, e.g. 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--batch-sizes must all be >= 1, got {text!r}")
    return values


def time_backend(backend: Backend, images: np.ndarray, warmup: int, repeats: int) -> dict[str, Any]:
    """Stats of `repeats` timed predict() calls after `warmup` untimed ones, and the calls' own
    times (the raw numbers the stats come from)."""
    for _ in range(warmup):
        backend.predict(images)
    samples = []
    for _ in range(repeats):
        timer = backend.timer()
        timer.start()
        backend.predict(images)
        samples.append(timer.stop())
    ms = np.asarray(samples, dtype=np.float64)
    latency = {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
               "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
               "min": float(ms.min()), "max": float(ms.max())}
    return {"latency_ms": latency, "throughput_ips": float(len(images) / (ms.mean() / 1e3)),
            "samples_ms": ms.tolist()}


def environment() -> dict[str, Any]:
    from ..core.gpu import gpu_info
    from .doctor import package_version as version
    try:
        gpu = gpu_info(0)
    except Exception:  # broken driver installs must not stop a CPU benchmark
        gpu = None
    return {"python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
            "onnxruntime": version("onnxruntime", "onnxruntime-gpu"), "torch": version("torch"),
            "tensorrt": version("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
            "gpu": gpu}


def _baseline_device(backend: Backend) -> str:
    """PyTorch runs where the measured model runs: a GPU backend gets a CUDA baseline."""
    return backend.device if backend.device.startswith("cuda") else "cpu"


def find_reference(model: Path, backend: Backend, reference: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    """Checkpoint for the PyTorch baseline: --reference, the .pt itself, or the engine sidecar's."""
    notes: list[str] = []
    if reference is not None:
        return Path(reference), notes
    if backend.kind == "torch":
        return model, notes
    recorded = getattr(getattr(backend, "info", None), "checkpoint", None)
    if recorded and Path(recorded).is_file():
        return Path(recorded), notes
    notes.append("no PyTorch baseline: pass --reference CKPT (ONNX files do not record their "
                 "checkpoint's path)")
    return None, notes


def run_bench(
    model: str | os.PathLike,
    *,
    batches: list[int] = (1, 8, 32),
    warmup: int = 10,
    repeats: int = 50,
    baseline: bool = True,
    reference: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark `model` (and the PyTorch baseline); returns the JSON dict described above."""
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"--warmup must be >= 0 and --repeats >= 1 (got {warmup}, {repeats})")
    say = progress or (lambda message: None)
    model = Path(model)
    # Every backend opened is closed however the run ends (a failed batch, a bad --reference,
    # Ctrl-C): GPU backends hold device memory and sessions until then.
    with contextlib.ExitStack() as opened:
        backend = opened.enter_context(open_backend(model, device=device))
        reference_backend, notes = _open_baseline(model, backend, reference, opened) if baseline else (None, [])
        size, rng, results = backend.image_size, np.random.default_rng(seed), []
        for b in batches:
            images = rng.standard_normal((b, 3, size, size), dtype=np.float32)   # (B, 3, S, S)
            results.append(_bench_batch(backend, reference_backend, images, warmup, repeats, say))
        if backend.batch_range and max(batches) > backend.batch_range[1]:
            notes.append(f"batches above {backend.batch_range[1]} run as several calls (model batch range "
                         f"{backend.batch_range[0]}-{backend.batch_range[1]})")
        return {
            "format": BENCH_FORMAT, "model": str(model), "backend": backend.kind, "device": backend.device,
            "precision": backend.precision, "image_size": size, "warmup": warmup, "repeats": repeats,
            "timer": backend.timer_kind,
            "baseline": ({"model": str(reference_backend.path), "backend": reference_backend.kind,
                          "device": reference_backend.device, "timer": reference_backend.timer_kind}
                         if reference_backend is not None else None),
            "results": results, "notes": notes, "environment": environment(),
        }


def _open_baseline(model: Path, backend: Backend, reference: str | os.PathLike | None,
                   opened: contextlib.ExitStack) -> tuple[Backend | None, list[str]]:
    """The PyTorch baseline's backend (None when there is no checkpoint to run) and notes about it;
    a backend it opens is closed with `opened`."""
    ref_path, notes = find_reference(model, backend, reference)
    if ref_path is None:
        return None, notes
    if backend.kind == "torch" and ref_path == model:
        return backend, notes  # a checkpoint is its own baseline: ratios are 1
    reference_backend = opened.enter_context(open_backend(ref_path, device=_baseline_device(backend)))
    if reference_backend.kind != "torch":
        raise ConfigError(f"--reference must be a checkpoint (.pt), got {ref_path}")
    if backend.metadata.source_sha256 and \
            reference_backend.metadata.source_sha256 != backend.metadata.source_sha256:
        notes.append(f"{ref_path} is not the checkpoint {model.name} was exported from "
                     f"(sha256 differs): the ratios compare different weights")
    return reference_backend, notes


def _bench_batch(backend: Backend, reference_backend: Backend | None, images: np.ndarray, warmup: int,
                 repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One entry of "results": the model and its baseline timed on the same batch."""
    b = len(images)
    say(f"batch {b}: {backend.kind} on {backend.device}")
    stats = time_backend(backend, images, warmup, repeats)
    ref_stats = None
    if reference_backend is not None:
        say(f"batch {b}: PyTorch baseline on {reference_backend.device}")
        ref_stats = stats if reference_backend is backend else \
            time_backend(reference_backend, images, warmup, repeats)
    return {
        "batch": b, "model": stats, "baseline": ref_stats,
        "speedup_p50": (ref_stats["latency_ms"]["p50"] / stats["latency_ms"]["p50"]) if ref_stats else None,
        "throughput_ratio": (stats["throughput_ips"] / ref_stats["throughput_ips"]) if ref_stats else None,
    }
