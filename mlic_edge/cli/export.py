"""CLI verb `export`, registered on the main typer app by `register(app)`.

Heavy modules (torch, onnx, modelopt) load inside the commands; importing this file is cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.capabilities import check_target
from ..core.errors import ConfigError
from .options import (
    PRECISION_HELP,
    TARGET_HELP,
    Calib,
    CalibBatch,
    CalibData,
    CalibImages,
    CalibMethod,
    CalibRoot,
    CalibSplit,
    calib_source,
    precision_callback,
    renamed,
)


def _parse_batch_dim(value: str) -> Optional[int]:
    """--batch-dim: a fixed batch size, or None for 'dynamic'."""
    if value.strip().lower() in ("dynamic", "none", "0", ""):
        return None
    try:
        batch = int(value)
    except ValueError:
        raise ConfigError(f"--batch-dim must be a positive integer or 'dynamic', got {value!r}") from None
    if batch < 1:
        raise ConfigError(f"--batch-dim must be >= 1 or 'dynamic', got {batch}")
    return batch


def _target(value: str) -> str:
    return check_target(value).name


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) written by `mlic-edge train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output ONNX file, e.g. model.onnx."),
    precision: str = typer.Option("fp32", "--precision", callback=precision_callback, help=PRECISION_HELP + " (int8 needs --calib or --calib-data)."),
    target: str = typer.Option("tensorrt", "--target", callback=_target, help=TARGET_HELP + "."),
    batch_dim: str = typer.Option("dynamic", "--batch-dim", help="Batch size baked into the graph, or 'dynamic' (any batch; spatial size is always fixed)."),
    batch_alias: Optional[str] = typer.Option(None, "--batch", hidden=True, help="Deprecated spelling of --batch-dim."),
    opset: int = typer.Option(19, help="ONNX opset, 17-20 (17+: LayerNormalization is one op; 19+: FP16-scale Q/DQ for int8; TensorRT 10.0-10.3 parses up to 20)."),
    calib: Calib = None,
    calib_data: CalibData = None,
    calib_root: CalibRoot = None,
    calib_split: CalibSplit = "train",
    calib_images: CalibImages = 500,
    calib_method: CalibMethod = None,
    calib_batch: CalibBatch = 0,
    high_precision: str = typer.Option("fp32", "--int8-high-precision", help="int8 for TensorRT: type of the ops left out of INT8: fp32 (default; measured safer) | fp16 (faster on GPU; check with `mlic-edge parity`)."),
    attention: bool = typer.Option(False, "--attention", help="Also output the per-label cross-attention maps 'attention' (B, K, h, w)."),
    exporter: str = typer.Option("auto", help="auto (dynamo, falling back to TorchScript) | dynamo | torchscript."),
    irpe_plugin: bool = typer.Option(False, "--irpe-plugin", help="Replace each encoder's iRPE attention core by one fused IRPEAttention TensorRT plugin node (mlic_edge namespace, version 1), after quantization; checked on ONNX Runtime with the reference op (needs onnxruntime-extensions: pip install 'mlic-edge[plugin]')."),
) -> None:
    """Export a checkpoint to one ONNX file (fp32/fp16/int8), checked against PyTorch on ONNX Runtime.

    Input 'images' float32 (B, 3, S, S), already preprocessed (squash resize + mean/std, both stored in the file's metadata); output 'logits' (B, K), sigmoid gives the scores. The export fails when ONNX Runtime and PyTorch disagree (max relative logit error > 1e-4) or, for --target tensorrt, when an op is outside TensorRT's ONNX support list.
    """
    from ..core.console import make_console

    from ..export.onnx_export import export_onnx

    batch = _parse_batch_dim(renamed(batch_dim, batch_alias, new="--batch-dim", old="--batch", default="dynamic"))
    source = calib_source(precision, calib, calib_data, calib_root, calib_split)
    console = make_console()
    with console.status(f"exporting {checkpoint} ({precision}, {target})..."):
        result = export_onnx(checkpoint, out, precision=precision, batch=batch, opset=opset,
                             target=target, calib=source, with_attention=attention,
                             calib_images=calib_images, calib_method=calib_method, calib_batch=calib_batch,
                             high_precision=high_precision, exporter=exporter, irpe_plugin=irpe_plugin)
    print_export(result, console)


def export_summary(result) -> str:
    """One line per export (the quickstart's log)."""
    size = result.path.stat().st_size / 2 ** 20
    checked = (f"{result.precision} vs PyTorch {_fmt(result.final_max_rel_error)}"
               if result.final_max_rel_error is not None else "")
    return (f"{result.path.name}: {result.precision}/{result.target}, {result.num_nodes} nodes, {size:.1f} MiB, "
            f"{result.seconds:.0f} s; max rel. logit error fp32 vs PyTorch {_fmt(result.fp32_max_rel_error)}"
            + (f", {checked}" if checked else ""))


def print_export(result, console) -> None:
    from rich.table import Table

    table = Table(title=f"ONNX export: {result.path}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    size = result.path.stat().st_size / 2 ** 20
    rows = [
        ("precision / target", f"{result.precision} / {result.target}"),
        ("exporter / opset", f"{result.exporter} / {result.opset}"),
        ("batch", "dynamic" if result.batch is None else str(result.batch)),
        ("outputs", ", ".join(result.output_names)),
        ("nodes", f"{result.num_nodes} ({', '.join(f'{k} {v}' for k, v in sorted(result.op_counts.items(), key=lambda kv: -kv[1])[:8])}, ...)"),
        ("ORT vs PyTorch (fp32 graph)", f"max rel. logit error {_fmt(result.fp32_max_rel_error)}"),
    ]
    if result.final_max_rel_error is not None:
        rows.append((f"ORT vs PyTorch ({result.precision})",
                     f"max rel. logit error {_fmt(result.final_max_rel_error)} (random inputs; "
                     f"run `mlic-edge parity` on real images)"))
    if result.calibration_images:
        calibration = result.metadata.extra["calibration"]
        rows.append(("calibration", f"{result.calibration_images} images, {calibration['method']}, "
                                    f"non-INT8 ops in {calibration['high_precision']}"))
    rows += [("size", f"{size:.1f} MiB"), ("time", f"{result.seconds:.1f} s")]
    rows += [("note", note) for note in result.notes]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
