"""CLI verb `parity`, registered on the main typer app by `register(app)`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..core.capabilities import check_precision, parity_limits
from ..core.errors import ConfigError
from .options import Data, DataRoot

_DEFAULT_LIMITS = ", ".join(f"{name}={limit:g}" for name, limit in parity_limits().items())


def _parse_thresholds(values: Optional[List[str]]) -> dict[str, float]:
    """--max-delta PRECISION=VALUE (repeatable) -> {precision: limit}."""
    thresholds = {}
    for value in values or []:
        name, _, number = value.partition("=")
        try:
            limit = float(number)
        except ValueError:
            raise ConfigError(f"--max-delta expects PRECISION=VALUE (e.g. int8=0.5), got {value!r}") from None
        thresholds[check_precision(name.strip(), "--max-delta precision").name] = limit
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
    max_delta: Optional[List[str]] = typer.Option(None, "--max-delta", help="Pass threshold on |delta mAP| in mAP points, per precision, e.g. --max-delta int8=0.5 (defaults " + _DEFAULT_LIMITS + "). Repeatable."),
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
    from ..core.files import atomic_write_bytes
    from ..parity import run_parity

    if (data is None) == (images is None):
        raise ConfigError("give exactly one of --data NAME or --images DIR")
    thresholds = _parse_thresholds(max_delta)
    console = make_console()
    with console.status(f"running {len(models)} model(s) and the reference..."):
        report = run_parity(reference, models, data=data, data_root=data_root, split=split,
                            image_dir=images, thresholds=thresholds, max_images=max_images,
                            batch_size=batch_size, workers=workers)
    console = print_parity(report, console)
    if json_out is not None:
        atomic_write_bytes(json_out, json.dumps(report.to_dicts(), indent=2, allow_nan=True).encode())
    if layers:
        _layers(console, reference, models, data=data, data_root=data_root, split=split, image_dir=images,
                num_images=layers_images, fp32_graph=layers_fp32,
                target=layers_json or (json_out.with_name(json_out.stem + ".layers.json") if json_out
                                       else Path("parity_layers.json")))
    if not report.passed:
        if not layers:
            console.print("[red]parity failed[/red]: find the tensor where a model loses the precision with "
                          "the same command plus --layers", highlight=False)
        raise typer.Exit(1)


def _layers(console, reference: Path, models: List[Path], *, target: Path, **source) -> None:
    """--layers: the per-tensor comparison of each fp16/int8 ONNX model, printed and written to `target`."""
    from ..core.files import atomic_write_bytes
    from ..layerwise import format_report
    from ..parity import run_layerwise

    with console.status("layer-wise comparison with the fp32 graph..."):
        reports = run_layerwise(reference, models, **source)
    for report in reports:
        console.print("\n".join(format_report(report)), highlight=False, markup=False)
    atomic_write_bytes(target, json.dumps(reports, indent=2, allow_nan=True).encode())
    console.print(f"per-tensor errors: {target}", highlight=False)


def print_parity(report, console):
    """The parity table of a `ParityReport` (one row per model); returns the console it printed on."""
    from rich import box
    from rich.table import Table

    from ..core.capabilities import precision_family
    from ..core.console import make_console

    rows = report.rows
    first = rows[0]
    limits = ", ".join(f"{family} {limit:g}" for family, limit in
                       sorted({precision_family(r.precision): r.max_delta_map for r in rows}.items()))
    if console.width < 130:  # keep the rows on one line each (piped output defaults to 80 columns)
        console = make_console(width=130)
    console.print(f"Parity on {first.source}: {first.images} images, targets: {first.targets}; "
                  f"reference (PyTorch) mAP {first.reference_map:.2f}; pass if |ΔmAP| <= {limits}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("precision", no_wrap=True)
    for column in ("mAP", "ΔmAP", "CF1", "OF1", "Δlogit max", "Δlogit mean", "top-1", "result"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(Path(row.model).name, row.precision, f"{row.map:.2f}", f"{row.delta_map:+.3f}",
                      f"{row.cf1:.2f}", f"{row.of1:.2f}", f"{row.max_abs_logit_error:.2g}",
                      f"{row.mean_abs_logit_error:.2g}", f"{100 * row.top1_agreement:.1f}%",
                      "[green]pass[/green]" if row.passed else "[red]FAIL[/red]")
    console.print(table)
    return console


def register(app: typer.Typer) -> None:
    app.command("parity")(parity_command)
