"""CLI verb `doctor`, registered on the main typer app by `register(app)`: prints
`runtime.doctor.collect()` (and writes it as JSON with --json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def doctor_command(
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON."),
) -> None:
    """Environment check: versions, GPUs, and the model formats, runtimes and devices this machine can run.

    Rows come from the capability table: model formats, TensorRT runtimes, ONNX Runtime providers,
    --device kinds and precisions. Lists Python, torch, timm, onnx, onnxruntime (+ execution providers, and for one that does not
    load here, why), TensorRT, CUDA driver and GPUs (name, compute capability, memory).
    """
    from ..core.files import atomic_write_text
    from ..runtime.doctor import collect, print_report

    report = collect()
    print_report(report)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report, indent=2, default=str) + "\n")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
