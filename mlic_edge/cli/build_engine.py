"""CLI verb `build-engine`, registered on the main typer app by `register(app)`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.capabilities import DEFAULT_BATCH_PROFILE, ENGINE_RUNTIMES, RUNTIME_CHOICES
from ..core.errors import ConfigError
from .options import (
    PRECISION_HELP,
    Calib,
    CalibData,
    CalibImages,
    CalibRoot,
    CalibSplit,
    calib_source,
    precision_callback,
    renamed,
)

_RTX = ENGINE_RUNTIMES["tensorrt-rtx"]


def build_engine_command(
    source: Path = typer.Argument(..., help="Checkpoint (.pt) or ONNX file (.onnx, from `mlic-edge export`)."),
    precision: Optional[str] = typer.Option(None, "--precision", callback=precision_callback, help=PRECISION_HELP + " (default: the source's precision; fp32 for a checkpoint; int8 needs --calib or --calib-data)."),
    fp16: bool = typer.Option(False, "--fp16", hidden=True, help="Deprecated spelling of --precision fp16."),
    int8: bool = typer.Option(False, "--int8", hidden=True, help="Deprecated spelling of --precision int8."),
    calib: Calib = None,
    calib_data: CalibData = None,
    calib_root: CalibRoot = None,
    calib_split: CalibSplit = "train",
    calib_images: CalibImages = 500,
    batch_profile: str = typer.Option(DEFAULT_BATCH_PROFILE, "--batch-profile", help="Optimization profile MIN:OPT:MAX batch (or one size for a static engine)."),
    batch_alias: Optional[str] = typer.Option(None, "--batch", hidden=True, help="Deprecated spelling of --batch-profile."),
    workspace: Optional[float] = typer.Option(None, "--workspace", help="Builder workspace limit in GiB (default: TensorRT's, the GPU's memory)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file, read and updated (default: ~/.cache/mlic-edge/tensorrt/timing-<trt>-<gpu>.cache)."),
    opt_level: Optional[int] = typer.Option(None, "--opt-level", help="builder_optimization_level 0-5 (TensorRT default 3)."),
    attention: bool = typer.Option(False, "--attention", help="Checkpoint source: also output the per-label attention maps (for infer --save-attention)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Engine file (default <source>.<precision>.engine); the sidecar is <engine>.json."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a matching engine (and ONNX) exists."),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT's verbose log."),
    irpe_plugin: bool = typer.Option(False, "--irpe-plugin", help="Checkpoint source: export with the fused IRPEAttention plugin (see `export --irpe-plugin`); the plugin's PTX kernel is compiled with Triton and baked into the engine. TensorRT 10/11 only (TensorRT for RTX 1.7 has no AOT Python plugins)."),
    runtime: str = typer.Option("auto", "--runtime", help=" | ".join(RUNTIME_CHOICES) + ". auto: TensorRT 10/11 where it imports and a GPU exists, else TensorRT for RTX (builds without a GPU)."),
    compute_capability: Optional[str] = typer.Option(None, "--compute-capability", help=f"TensorRT for RTX: the GPUs the engine runs on: portable (default: {','.join(_RTX.portable_default)}), current (this machine's GPU), or a list such as 8.6,8.9 ({' '.join(_RTX.runs_on)})."),
) -> None:
    """Build a TensorRT 10/11 or TensorRT for RTX engine (strongly typed: the precision is the ONNX graph's).

    Writes the precision ONNX first (model.fp16.onnx, ...), then the engine and its JSON sidecar
    (classes, preprocessing, thresholds, runtime and version, target compute capabilities, build
    GPU, ONNX sha256, build options, I/O). An engine with the same key is reused. TensorRT for RTX
    builds on a machine without a GPU; the engine is specialised on first run on the target GPU
    (cached next to the engine). Without any runtime it stops after the ONNX, saying what to install.
    """
    from rich.markup import escape

    from ..core.console import make_console
    from ..export.engine import build_engine

    if fp16 and int8:
        raise ConfigError("give --precision fp16 or --precision int8, not both")
    alias = "fp16" if fp16 else "int8" if int8 else None
    precision = renamed(precision, alias, new="--precision", old=f"--{alias}")
    batch = renamed(batch_profile, batch_alias, new="--batch-profile", old="--batch", default=DEFAULT_BATCH_PROFILE)
    source_calib = calib_source(precision, calib, calib_data, calib_root, calib_split)
    console = make_console()
    with console.status("building...") as status:
        result = build_engine(source, out, precision=precision, calib=source_calib, batch=batch,
                              workspace_gb=workspace, timing_cache=timing_cache, optimization_level=opt_level,
                              with_attention=attention, calib_images=calib_images, force=force,
                              verbose=verbose, status=lambda message: status.update(message),
                              irpe_plugin=irpe_plugin, runtime=runtime, compute_capability=compute_capability)
    for line in describe_build(result):
        console.print(escape(line), highlight=False, soft_wrap=True)


def describe_build(result) -> list[str]:
    """What a user reads after a build: engine, runtime, targets, size, time, I/O."""
    info = result.info
    verb = "reused" if result.reused_engine else "built"
    size = result.engine.stat().st_size / 2 ** 20
    build_s = info.build.get("build_seconds")
    profile = ":".join(str(info.profile[k]) for k in ("min", "opt", "max")) if info.profile else "static"
    lines = [f"{verb} {result.engine} ({size:.1f} MiB) with {info.runtime_label}: {result.precision}, compute "
             f"capability {', '.join(info.compute_capabilities)}, batch {profile}"
             + (f", build {build_s:.1f} s" if build_s is not None and not result.reused_engine else ""),
             f"  from {result.onnx}; sidecar {result.sidecar}"]
    network = info.build.get("network") or {}
    for kind in ("inputs", "outputs"):
        for tensor in network.get(kind, []):
            shape = "x".join("B" if d == -1 else str(d) for d in tensor["shape"])
            lines.append(f"  {kind[:-1]:6s} {tensor['name']:12s} {shape:16s} {tensor['dtype']}")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def register(app: typer.Typer) -> None:
    app.command("build-engine")(build_engine_command)
