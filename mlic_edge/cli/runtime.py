"""CLI verbs `infer`, `bench` and `doctor`, registered on the main typer app by `register(app)`.

Nothing heavy is imported at module level: `mlic-edge infer` with an ONNX model or an engine runs
where torch is not installed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def infer_command(
    path: Path = typer.Argument(..., help="An image, a folder of images, or a .txt file listing image paths (one per line, relative to the list)."),
    model: Path = typer.Option(..., "--model", "-m", help="Model file: .onnx (ONNX Runtime), .engine/.plan (TensorRT), .pt (PyTorch checkpoint)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the predictions to preds.csv or preds.jsonl (atomically). Default: JSON lines on stdout."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="One score threshold for every class. Default: the model's per-class thresholds (from its metadata)."),
    batch: int = typer.Option(8, "--batch", "-b", help="Images per model call."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Search subfolders of a folder PATH."),
    save_attention: Optional[Path] = typer.Option(None, "--save-attention", help="Draw each predicted label's cross-attention map over its image into this folder (<image>__<label>.png). Needs the 'attention' output: .pt always; ONNX/engines exported with --attention."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | tensorrt (ONNX Runtime's TensorRT provider)."),
    workers: int = typer.Option(4, help="Decoding threads (they prepare the next batches while the model runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Label images: labels above threshold and every class's score, per image.

    Each row: path, labels, error, score per class (CSV columns score_<class>; JSONL "scores").
    Files that cannot be decoded get a row with the error, are reported on stderr and skipped.

    Exit code: 0 when at least one image was labelled (even if others failed), 1 when none could
    be processed, 2 on a usage or model-file error.
    """
    from rich.console import Console
    from rich.markup import escape

    from ..runtime.infer import run_inference

    console = Console(stderr=True)
    summary = run_inference(path, model, out, threshold=threshold, batch_size=batch, recursive=recursive,
                            save_attention=save_attention, device=device, workers=workers,
                            progress=progress, console=console)
    where = f" -> {summary.out}" if summary.out else ""
    extra = f", {summary.attention_images} attention maps in {save_attention}" if save_attention else ""
    console.print(escape(f"{summary.processed}/{summary.total} images labelled, {summary.failed} skipped "
                         f"({summary.backend['backend']} on {summary.backend['device']}, "
                         f"{summary.seconds:.1f} s){where}{extra}"), highlight=False)
    if summary.processed == 0:
        console.print("[red]error:[/red] no image could be processed", highlight=False)
        raise typer.Exit(1)


def _ms(stats: dict | None, key: str) -> str:
    return f"{stats['latency_ms'][key]:.2f}" if stats else "-"


def bench_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file to time: .onnx | .engine | .pt."),
    batch: str = typer.Option("1,8,32", "--batch", "-b", help="Comma-separated batch sizes."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON. Keys: format, model, backend, device, precision, image_size, warmup, repeats, timer, baseline, results[] (batch, model{latency_ms{mean,p50,p90,p99,min,max}, throughput_ips}, baseline (same or null), speedup_p50, throughput_ratio), notes, environment."),
    warmup: int = typer.Option(10, help="Untimed calls per batch size before timing (engine autotuning, caches, CUDA graph capture)."),
    repeats: int = typer.Option(50, help="Timed calls per batch size."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also time PyTorch eager (same process, same inputs) and print the ratios."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Checkpoint (.pt) for the PyTorch baseline. Default: the .pt itself, or the checkpoint recorded in an engine's sidecar."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | tensorrt."),
) -> None:
    """Latency p50/p90/p99 and throughput per batch size, vs PyTorch eager.

    Each timed call is predict() on host float32 (B, 3, S, S): copies to and from the device are
    included. GPU backends are timed with CUDA events, CPU ones with perf_counter.
    """
    from rich.console import Console
    from rich.markup import escape

    from ..core.files import atomic_write_text
    from ..runtime.bench import parse_batches, run_bench

    console = Console()
    with console.status("benchmarking...") as status:
        report = run_bench(model, batches=parse_batches(batch), warmup=warmup, repeats=repeats,
                           baseline=baseline, reference=reference, device=device,
                           progress=lambda message: status.update(message))
    print_bench(report, console)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {escape(str(json_out))}", highlight=False)


def print_bench(report: dict, console) -> None:
    """The bench table: latency percentiles and throughput per batch, with the baseline's."""
    from rich.markup import escape
    from rich.table import Table

    base = report["baseline"]
    title = escape(f"{Path(report['model']).name}: {report['backend']} on {report['device']} "
             f"({report['precision']}, {report['timer']})"
                   + (f" vs PyTorch eager on {base['device']}" if base else ""))
    table = Table(title=title)
    for column in ("batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "torch p50", "torch img/s", "speedup",
                   "img/s ratio"):
        table.add_column(column, justify="right")
    for row in report["results"]:
        ref = row["baseline"]
        table.add_row(str(row["batch"]), _ms(row["model"], "p50"), _ms(row["model"], "p90"),
                      _ms(row["model"], "p99"), f"{row['model']['throughput_ips']:.1f}", _ms(ref, "p50"),
                      f"{ref['throughput_ips']:.1f}" if ref else "-",
                      f"{row['speedup_p50']:.2f}x" if row["speedup_p50"] else "-",
                      f"{row['throughput_ratio']:.2f}x" if row["throughput_ratio"] else "-")
    console.print(table)
    for note in report["notes"]:
        console.print(f"note: {escape(note)}", highlight=False)


def doctor_command(
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON."),
) -> None:
    """Environment check: versions, GPUs, and the backends/precisions this machine can run.

    Lists Python, torch, timm, onnx, onnxruntime (+ execution providers), TensorRT, CUDA driver and
    GPUs (name, compute capability, memory).
    """
    from ..core.files import atomic_write_text
    from ..runtime.doctor import collect, print_report

    report = collect()
    print_report(report)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2, default=str) + "\n")


def register(app: typer.Typer) -> None:
    app.command("infer")(infer_command)
    app.command("bench")(bench_command)
    app.command("doctor")(doctor_command)
