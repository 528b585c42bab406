"""CLI verbs `export` and `parity`, registered on the main typer app by `register(app)`.

Heavy modules (torch, onnx, modelopt) load inside the commands; importing this file is cheap.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..core.errors import ConfigError
from .options import (
    Calib,
    CalibBatch,
    CalibData,
    CalibImages,
    CalibMethod,
    CalibRoot,
    CalibSplit,
    Data,
    DataRoot,
    calib_source,
)


def _parse_batch(value: str) -> Optional[int]:
    if value.strip().lower() in ("dynamic", "none", "0", ""):
        return None
    try:
        batch = int(value)
    except ValueError:
        raise ConfigError(f"--batch must be a positive integer or 'dynamic', got {value!r}")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1 or 'dynamic', got {batch}")
    return batch


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) written by `mlic-edge train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output ONNX file, e.g. model.onnx."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 (mixed, LayerNorm/Softmax/reductions kept FP32) | int8 (calibrated; needs --calib or --calib-data)."),
    target: str = typer.Option("tensorrt", help="tensorrt: graph for TensorRT 10/11 (explicit symmetric Q/DQ for int8, TensorRT op-support check) | cpu: ONNX Runtime CPU (UINT8 QDQ int8)."),
    batch: str = typer.Option("dynamic", help="Batch size baked into the graph, or 'dynamic' (any batch; spatial size is always fixed)."),
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

    from ..export import export_onnx

    source = calib_source(precision, calib, calib_data, calib_root, calib_split)
    console = make_console()
    with console.status(f"exporting {checkpoint} ({precision}, {target})..."):
        result = export_onnx(checkpoint, out, precision=precision, batch=_parse_batch(batch), opset=opset,
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


def _parse_thresholds(values: Optional[List[str]]) -> dict:
    thresholds = {}
    for value in values or []:
        name, _, number = value.partition("=")
        try:
            thresholds[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(f"--max-delta expects PRECISION=VALUE (e.g. int8=0.5), got {value!r}")
        if name.strip() not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"--max-delta precision must be fp32, fp16 or int8, got {name!r}")
    return thresholds


def parity_command(
    models: List[Path] = typer.Argument(..., help="Exported model files (.onnx) to compare with the reference."),
    reference: Path = typer.Option(..., "--reference", help="Reference checkpoint (.pt) the models were exported from."),
    data: Data = None,
    data_root: DataRoot = None,
    split: str = typer.Option("test", help="Dataset split to evaluate on."),
    images: Optional[Path] = typer.Option(None, "--images", help="Instead of --data: a folder of unlabelled images; the reference's decisions become the targets."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Use only the first N images."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Batch size (static-batch graphs are fed in their own batch)."),
    workers: int = typer.Option(0, help="Data-loading worker processes (dataset only)."),
    max_delta: Optional[List[str]] = typer.Option(None, "--max-delta", help="Pass threshold on |delta mAP| in mAP points, per precision, e.g. --max-delta int8=0.5 (defaults fp32=0.01, fp16=0.1, int8=1.0). Repeatable."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the rows as JSON to this file."),
    layers: bool = typer.Option(False, "--layers", help="Also find where each fp16/int8 ONNX model loses precision: every intermediate tensor vs the fp32 graph on one batch (ONNX Runtime), ranked by relative error, the first jump marked. Written as JSON to --layers-json (default: <--json>.layers.json, else parity_layers.json)."),
    layers_fp32: Optional[Path] = typer.Option(None, "--layers-fp32", help="--layers: the fp32 ONNX graph the models came from (default: exported from --reference)."),
    layers_images: int = typer.Option(8, "--layers-images", help="--layers: images in the batch (every activation of the batch is held in memory)."),
    layers_json: Optional[Path] = typer.Option(None, "--layers-json", help="--layers: JSON file for the per-tensor errors."),
) -> None:
    """Accuracy parity: PyTorch reference vs each model on the same preprocessed images.

    Reports mAP, delta mAP, CF1, OF1, logit errors and top-1 agreement per model; exits 1 when a model's |delta mAP| exceeds its precision's threshold. --layers then shows which tensor of an fp16/int8 graph loses the precision.
    """
    from ..core.console import make_console

    from ..parity import run_parity

    if (data is None) == (images is None):
        raise ConfigError("give exactly one of --data NAME or --images DIR")
    thresholds = _parse_thresholds(max_delta)
    console = make_console()
    with console.status(f"running {len(models)} model(s) and the reference..."):
        rows = run_parity(reference, models, data=data, data_root=data_root, split=split,
                          image_dir=images, thresholds=thresholds, max_images=max_images,
                          batch_size=batch_size, workers=workers)
    console = print_parity(rows, console)
    from ..core.files import atomic_write_bytes
    if json_out is not None:
        atomic_write_bytes(json_out, json.dumps(rows, indent=2, allow_nan=True).encode())
    if layers:
        from ..layerwise import format_report
        from ..parity import run_layerwise

        with console.status("layer-wise comparison with the fp32 graph..."):
            reports = run_layerwise(reference, models, data=data, data_root=data_root, split=split,
                                    image_dir=images, num_images=layers_images, fp32_graph=layers_fp32)
        for report in reports:
            console.print("\n".join(format_report(report)), highlight=False, markup=False)
        target = layers_json or (json_out.with_name(json_out.stem + ".layers.json") if json_out
                                 else Path("parity_layers.json"))
        atomic_write_bytes(target, json.dumps(reports, indent=2, allow_nan=True).encode())
        console.print(f"per-tensor errors: {target}", highlight=False)
    if not all(row["passed"] for row in rows):
        if not layers:
            console.print("[red]parity failed[/red]: find the tensor where a model loses the precision with "
                          "the same command plus --layers", highlight=False)
        raise typer.Exit(1)


def print_parity(rows: list[dict], console):
    """The parity table (one row per model); returns the console it printed on."""
    from rich import box
    from ..core.console import make_console
    from rich.table import Table

    from ..core.capabilities import precision_family

    first = rows[0]
    limits = ", ".join(f"{family} {limit:g}" for family, limit in
                       sorted({precision_family(r["precision"]): r["max_delta_mAP"] for r in rows}.items()))
    if console.width < 130:  # keep the rows on one line each (piped output defaults to 80 columns)
        console = make_console(width=130)
    console.print(f"Parity on {first['source']}: {first['images']} images, targets: {first['targets']}; "
                  f"reference (PyTorch) mAP {first['reference_mAP']:.2f}; pass if |ΔmAP| <= {limits}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("precision", no_wrap=True)
    for column in ("mAP", "ΔmAP", "CF1", "OF1", "Δlogit max", "Δlogit mean", "top-1", "result"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(Path(row["model"]).name, row["precision"], f"{row['mAP']:.2f}", f"{row['delta_mAP']:+.3f}",
                      f"{row['CF1']:.2f}", f"{row['OF1']:.2f}", f"{row['max_abs_logit_err']:.2g}",
                      f"{row['mean_abs_logit_err']:.2g}", f"{100 * row['top1_agreement']:.1f}%",
                      "[green]pass[/green]" if row["passed"] else "[red]FAIL[/red]")
    console.print(table)
    return console


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("parity")(parity_command)
