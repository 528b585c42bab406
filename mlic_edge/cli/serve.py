"""CLI verbs `serve` (the model behind Triton, through PyTriton) and `export-triton` (a model
repository for NVIDIA's Triton containers). PyTriton is imported when `serve` runs."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional

import typer

from ..serve.defaults import DEFAULT_MAX_REQUEST_MB, DEFAULT_QUEUE_DELAY_US
from .options import Device

SERVE_EPILOG = """\
Example request (KServe v2 JSON; <name> = the file's stem or --name; an image in JSON is sent
base64-encoded, binary clients send the file's bytes as they are):

  curl -s localhost:8000/v2/models/<name>/infer -d '{"inputs": [{"name": "image", "shape": [1, 1],
  "datatype": "BYTES", "data": ["'"$(base64 -w0 a.jpg)"'"]}]}'

Or: mlic-edge infer images/ --server localhost:8000 -o preds.csv (HTTP; grpc://localhost:8001 for gRPC).
"""


def serve_command(
    model: Path = typer.Argument(..., help="Model file: .onnx (ONNX Runtime), .engine/.plan (TensorRT; needs TensorRT and a GPU), .pt (PyTorch checkpoint)."),
    name: Optional[str] = typer.Option(None, "--name", help="Served model name (default: the file's stem). Also serves <name>_tensor (preprocessed FP32 [3,S,S] input) and <name>_metadata (classes, thresholds, preprocessing, for clients)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch Triton's dynamic batcher forms. Default: an engine's profile max (its sidecar), else 8."),
    max_queue_delay_us: int = typer.Option(DEFAULT_QUEUE_DELAY_US, "--max-queue-delay-us", help="How long (microseconds) the batcher holds a request to fill a batch with others."),
    instances: int = typer.Option(1, "--instances", help="Model instances (Triton runs one batch per instance at a time). ONNX/.pt instances share one session; engines get one execution context each."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (HTTP, gRPC, metrics). 0.0.0.0 serves other machines."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port (/metrics: nv_inference_request_success, nv_inference_exec_count, ...)."),
    device: Device = "auto",
    workers: int = typer.Option(4, "--workers", help="Decoding threads per model instance (images are decoded on the server)."),
    max_request_mb: float = typer.Option(DEFAULT_MAX_REQUEST_MB, "--max-request-mb", help="Largest request, in MB of encoded images (base64 text counts as sent), checked before decoding: a larger request gets an error naming this limit in each of its rows; other requests are unaffected. Triton itself sets no HTTP size limit (gRPC: 2 GB)."),
    verbose: bool = typer.Option(False, "--verbose", help="Triton's verbose log."),
) -> None:
    """Serve a model with NVIDIA Triton Inference Server (PyTriton).

    Needs the serve extra: pip install "mlic-edge\\[serve]" (it also pins numpy < 2, which
    PyTriton's Python backend needs).

    The model <name> takes encoded image files (input "image", BYTES, one file per row) and returns
    "scores" (FP32 [K], after the sigmoid), "labels" (BYTES, the classes at or above the model's
    per-class thresholds, ';'-joined) and "error" ("" or why that row's image could not be decoded;
    the other rows and requests are unaffected). Requests from all clients are merged into batches
    by Triton's dynamic batcher. /v2/health/ready answers 200, and the "serving ..." line is
    printed, once every served model is loaded. SIGTERM or Ctrl-C stops it (exit 0).
    """
    from ..core.console import make_console

    from ..serve.server import ServeOptions, serve

    console = make_console(stderr=True)
    options = ServeOptions(name=name, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                           instances=instances, host=host, http_port=http_port, grpc_port=grpc_port,
                           metrics_port=metrics_port, device=device, workers=workers,
                           max_request_mb=max_request_mb, verbose=verbose)

    def ready(served: str, batch: int) -> None:
        console.print(f"serving {served} (max batch {batch}) on http://{host}:{http_port} "
                      f"grpc://{host}:{grpc_port} metrics http://{host}:{metrics_port}/metrics; "
                      f"Ctrl-C or SIGTERM stops", highlight=False)

    raise typer.Exit(serve(model, options, on_ready=ready))


serve_command.__doc__ = (serve_command.__doc__ or "") + "\n" + textwrap.indent(SERVE_EPILOG, "    ")


def export_triton_command(
    model: Path = typer.Argument(..., help="Model file: .onnx (served by onnxruntime_onnx) or .engine/.plan (tensorrt_plan; an engine runs only on the GPU model and TensorRT version it was built for)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model repository folder to write (created; existing files of these models are replaced)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the ensemble clients call (default: the file's stem); its steps are <name>_preprocess, <name>_model, <name>_postprocess, plus <name>_metadata."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="max_batch_size: default an engine's profile max, or 8 for a dynamic-batch ONNX."),
    max_queue_delay_us: int = typer.Option(DEFAULT_QUEUE_DELAY_US, "--max-queue-delay-us", help="Dynamic batcher: microseconds a request waits for others."),
    instances: int = typer.Option(1, "--instances", help="Instances of the model (instance_group count)."),
    kind: str = typer.Option("gpu", "--kind", help="Where the model instances run: gpu (KIND_GPU) | cpu (KIND_CPU; ONNX only)."),
) -> None:
    """Write a Triton model repository for NVIDIA's containers (nvcr.io/nvidia/tritonserver:<yy.mm>-py3).

    Clients send an encoded image (input "image", BYTES) to the ensemble <name> and get "scores"
    (FP32 [K]) and "labels" (BYTES, ';'-joined): preprocessing (our decoding and normalisation,
    Python backend, numpy + Pillow) -> the model (TensorRT or ONNX Runtime backend) ->
    postprocessing (sigmoid, the model's per-class thresholds). The container needs Pillow for the
    preprocessing model: pip install pillow before starting tritonserver (see README, Serving).
    """
    from ..core.console import make_console
    from rich.markup import escape

    from ..serve.repository import export_repository

    written = export_repository(model, out, name=name, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                                instances=instances, kind=kind)
    make_console(stderr=True).print(escape(f"wrote {len(written)} models to {out}: {', '.join(written)}"), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("export-triton")(export_triton_command)
