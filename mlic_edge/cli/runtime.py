"""CLI verbs `infer`, `bench` and `doctor`, registered on the main typer app by `register(app)`.

Nothing heavy is imported at module level: `mlic-edge infer` with an ONNX model or an engine runs
where torch is not installed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..core.errors import ConfigError


def infer_command(
    path: str = typer.Argument(..., help="An image, a folder of images, a .txt file listing image paths (one per line, relative to the list), a video file (.mp4 .mkv .avi .mov .webm ...), a stream URL (rtsp://, http://...) or a camera (/dev/video0)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model file: .onnx (ONNX Runtime), .engine/.plan (TensorRT), .pt (PyTorch checkpoint). With --server: the served model's name (not needed when the server serves one model)."),
    server: Optional[str] = typer.Option(None, "--server", help="Send the images to a Triton server instead of running a model here (`mlic-edge serve`, or an export-triton repository): localhost:8000 or http://host:8000[/name] (HTTP), grpc://host:8001[/name] (gRPC). Images only; rows as with a local model."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="With --server: requests in flight (one image each), so the server's dynamic batcher fills its batches. Default: 2 x --batch."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the rows to preds.csv or preds.jsonl. They go to <out>.partial as they are produced (a killed job keeps them) and the file is renamed to <out> when the job ends. Default: JSON lines on stdout."),
    resume: bool = typer.Option(False, "--resume", help="Continue a folder/list job that was killed (Ctrl-C, OOM, power): the rows in <out>.partial are kept, their images are not run again, and the final file equals an uninterrupted run's. Needs the same inputs, model, --batch and --threshold."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="One score threshold for every class. Default: the model's per-class thresholds (from its metadata)."),
    batch: int = typer.Option(8, "--batch", "-b", help="Images (or frames) per model call."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Search subfolders of a folder PATH."),
    save_attention: Optional[Path] = typer.Option(None, "--save-attention", help="Draw each predicted label's cross-attention map over its image into this folder (<image>__<label>.png). Needs the 'attention' output: .pt always; ONNX/engines exported with --attention. Images only."),
    every: Optional[int] = typer.Option(None, "--every", help="Video: tag every N-th frame (default: every frame, or --fps)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Video: tag F frames per second of video time (instead of --every)."),
    segments: Optional[Path] = typer.Option(None, "--segments", help="Video: also write tags over time to this CSV: one row per (label, start_s, end_s, peak_score, frames). Each class's score is smoothed over the sampled frames (--smoothing), then a label turns on when the smoothed score reaches the class threshold and off only when it falls below threshold - --hysteresis, so it does not flicker between neighbouring frames."),
    smoothing: str = typer.Option("ema", "--smoothing", help="Video segments: ema (exponential moving average, weight --alpha on the newest frame) | median (median of the last --window frames) | none."),
    alpha: float = typer.Option(0.5, "--alpha", help="Video segments, ema: weight of the newest frame in (0, 1]; 0.5 turns a label on one sampled frame after a scene change."),
    window: int = typer.Option(3, "--window", help="Video segments, median: frames in the window (3 removes one-frame flickers)."),
    hysteresis: float = typer.Option(0.1, "--hysteresis", help="Video segments: a label turns off below its threshold minus this (0 turns it off at the threshold)."),
    min_frames: int = typer.Option(1, "--min-frames", help="Video segments: drop segments shorter than this many sampled frames."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | tensorrt (ONNX Runtime's TensorRT provider)."),
    workers: int = typer.Option(2, help="Decoding threads (they prepare the next batches while the model runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Tag images, folders, lists, video files and streams: labels above threshold and every class's score.

    Each row: path, labels, error, score per class (CSV columns score_<class>; JSONL "scores");
    video rows add frame and time_s. Files or frames that cannot be decoded get a row (images) or a
    line on stderr (frames) and are skipped; a dropped live stream is reconnected (5 tries).
    Ctrl-C stops a folder job with its rows kept for --resume, and ends a video or stream job
    with its rows and segments written.

    Exit code: 0 when at least one input was tagged (even if others failed), 1 when none could
    be, 2 on a usage or model-file error, 130 when a folder job was interrupted.

    Examples:

      mlic-edge infer images/ -m best.onnx -o preds.csv            # killed? add --resume

      mlic-edge infer clip.mp4 -m best.onnx --every 5 -o frames.csv --segments segments.csv

      mlic-edge infer rtsp://camera/stream -m best.engine --fps 2 -o live.jsonl

      mlic-edge infer images/ --server localhost:8000 -o preds.csv   # a running `mlic-edge serve`
    """
    from ..core.console import make_console
    from rich.markup import escape

    from ..runtime.video import is_video_source
    from ..runtime.infer import run_inference

    console = make_console(stderr=True)
    target = model
    if server is not None:
        from ..runtime.remote import RemoteTagger

        target = RemoteTagger(server, model, batch_size=batch, workers=workers, concurrency=concurrency)
    elif model is None:
        raise ConfigError("give the model: --model FILE (or --server URL for a Triton server)")
    elif concurrency is not None:
        raise ConfigError("--concurrency is for --server")
    options = {"smoothing": smoothing, "alpha": alpha, "window": window, "hysteresis": hysteresis,
               "min_frames": min_frames}
    try:
        summary = run_inference(path, target, out, threshold=threshold, batch_size=batch, recursive=recursive,
                                save_attention=save_attention, device=device, workers=workers,
                                progress=progress, console=console, resume=resume, every=every, fps=fps,
                                segments=segments, segment_options=options)
    finally:
        if server is not None:
            target.close()
    if summary.interrupted and summary.partial is not None:
        console.print(escape(f"interrupted: {summary.resumed + summary.processed + summary.failed} rows kept in "
                             f"{summary.partial}; run the same command with --resume to continue"), highlight=False)
        raise typer.Exit(130)
    what = "frames" if is_video_source(path) else "images"
    where = f" -> {summary.out}" if summary.out else ""
    extra = f", {summary.attention_images} attention maps in {save_attention}" if save_attention else ""
    extra += f", {summary.segments} segments -> {segments}" if summary.segments is not None else ""
    extra += f", {summary.resumed} kept from the interrupted run" if summary.resumed else ""
    console.print(escape(f"{summary.processed}/{summary.total or summary.processed + summary.failed} {what} "
                         f"labelled, {summary.failed} skipped ({summary.backend['backend']} on "
                         f"{summary.backend['device']}, {summary.seconds:.1f} s){where}{extra}"), highlight=False)
    if summary.processed == 0 and summary.resumed == 0:
        console.print(f"[red]error:[/red] no {what[:-1]} could be processed", highlight=False)
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
    from ..core.console import make_console
    from rich.markup import escape

    from ..core.files import atomic_write_text
    from ..runtime.bench import parse_batches, run_bench

    console = make_console()
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
