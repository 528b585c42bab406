"""CLI verb `bench`, registered on the main typer app by `register(app)`: times a model file
(`runtime.bench.run_bench`) and prints the table.

Nothing heavy is imported at module level.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .options import Device, renamed


def _ms(stats: dict | None, key: str) -> str:
    return f"{stats['latency_ms'][key]:.2f}" if stats else "-"


def bench_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model file to time: .onnx | .engine | .pt."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Comma-separated batch sizes."),
    batch_alias: Optional[str] = typer.Option(None, "--batch", "-b", hidden=True),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON. Keys: format, model, backend, device, precision, image_size, warmup, repeats, timer, baseline, results[] (batch, model{latency_ms{mean,p50,p90,p99,min,max}, throughput_ips, samples_ms[]}, baseline (same or null), speedup_p50, throughput_ratio), notes, environment."),
    warmup: int = typer.Option(10, help="Untimed calls per batch size before timing (engine autotuning, caches, CUDA graph capture)."),
    repeats: int = typer.Option(50, help="Timed calls per batch size."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also time PyTorch eager (same process, same inputs) and print the ratios."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Checkpoint (.pt) for the PyTorch baseline. Default: the .pt itself, or the checkpoint recorded in an engine's sidecar."),
    device: Device = "auto",
) -> None:
    """Latency p50/p90/p99 and throughput per batch size, vs PyTorch eager.

    Each timed call is predict() on host float32 (B, 3, S, S): copies to and from the device are
    included. GPU backends are timed with CUDA events, CPU ones with perf_counter.
    """
    from ..core.console import make_console
    from rich.markup import escape

    from ..core.files import atomic_write_text
    from ..runtime.bench import parse_batches, run_bench

    batch_sizes = renamed(batch_sizes, batch_alias, new="--batch-sizes", old="--batch", default="1,8,32")
    console = make_console()
    with console.status("benchmarking...") as status:
        report = run_bench(model, batches=parse_batches(batch_sizes), warmup=warmup, repeats=repeats,
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


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
