"""CLI verb `infer`, registered on the main typer app by `register(app)`: parses the options,
runs `runtime.infer.run_inference` and prints its summary.

Nothing heavy is imported at module level: `mlic-edge infer` with an ONNX model or an engine runs
where torch is not installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.errors import ConfigError
from .options import Device, renamed

INFER_EPILOG = """
    Exit code: 0 when at least one input was tagged (even if others failed), 1 when none could
    be, 2 on a usage or model-file error, 130 when a folder job was interrupted.

    Examples:

      mlic-edge infer images/ -m best.onnx -o preds.csv            # killed? add --resume

      mlic-edge infer clip.mp4 -m best.onnx --every 5 -o frames.csv --segments segments.csv

      mlic-edge infer rtsp://camera/stream -m best.engine --fps 2 -o live.jsonl

      mlic-edge infer images/ --server localhost:8000 -o preds.csv   # a running `mlic-edge serve`

      mlic-edge infer images/ --server grpc://localhost:8001 --wait 60 -o preds.csv   # one starting
"""


def infer_command(
    path: str = typer.Argument(..., help="An image, a folder of images, a .txt file listing image paths (one per line, relative to the list), a video file (.mp4 .mkv .avi .mov .webm ...), a stream URL (rtsp://, http://...) or a camera (/dev/video0)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model file: .onnx (ONNX Runtime), .engine/.plan (TensorRT), .pt (PyTorch checkpoint). With --server: the served model's name (not needed when the server serves one model)."),
    server: Optional[str] = typer.Option(None, "--server", help="Send the images to a Triton server instead of running a model here (`mlic-edge serve`, or an export-triton repository): localhost:8000 or http://host:8000\\[/name] (HTTP), grpc://host:8001\\[/name] (gRPC). Images, video and streams (frames are sampled here and sent as images); rows and segments as with a local model."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="With --server: requests in flight, each of up to the server's max batch of images (its model config), so the server's model never waits for the next batch. Default: 3."),
    wait: Optional[float] = typer.Option(None, "--wait", help="With --server: wait up to SECONDS for the server and the model to be ready (a server still starting), instead of failing at once."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the rows to preds.csv or preds.jsonl. They go to <out>.partial as they are produced (a killed job keeps them) and the file is renamed to <out> when the job ends. Default: JSON lines on stdout."),
    resume: bool = typer.Option(False, "--resume", help="Continue a folder/list job that was killed (Ctrl-C, OOM, power): the rows in <out>.partial are kept, their images are not run again, and the final file equals an uninterrupted run's. Needs the same inputs, model, --batch-size and --threshold."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="One score threshold for every class. Default: the model's per-class thresholds (from its metadata)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Images (or frames) per model call."),
    batch_alias: Optional[int] = typer.Option(None, "--batch", hidden=True),
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
    device: Device = "auto",
    workers: int = typer.Option(2, help="Decoding threads (they prepare the next batches while the model runs)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Tag images, folders, lists, video files and streams: labels above threshold and every class's score.

    Each row: path, labels, error, score per class (CSV columns score_<class>; JSONL "scores");
    video rows add frame and time_s. Files or frames that cannot be decoded get a row (images) or a
    line on stderr (frames) and are skipped; a dropped live stream is reconnected (5 tries).
    Ctrl-C stops a folder job with its rows kept for --resume, and ends a video or stream job
    with its rows and segments written.
    """
    from ..core.console import make_console
    from ..runtime.infer import run_inference

    batch_size = renamed(batch_size, batch_alias, new="--batch-size", old="--batch", default=8)
    console = make_console(stderr=True)
    target = _target(model, server, concurrency, wait, batch_size, workers)
    options = {"smoothing": smoothing, "alpha": alpha, "window": window, "hysteresis": hysteresis,
               "min_frames": min_frames}
    try:
        summary = run_inference(path, target, out, threshold=threshold, batch_size=batch_size, recursive=recursive,
                                save_attention=save_attention, device=device, workers=workers,
                                progress=progress, console=console, resume=resume, every=every, fps=fps,
                                segments=segments, segment_options=options)
    finally:
        if server is not None:
            target.close()
    raise typer.Exit(_print_summary(console, summary, path, save_attention, segments))


infer_command.__doc__ = (infer_command.__doc__ or "") + INFER_EPILOG


def _target(model: Optional[str], server: Optional[str], concurrency: Optional[int], wait: Optional[float],
            batch_size: int, workers: int):
    """The model file, or a RemoteTagger for --server."""
    if server is not None:
        from ..runtime.remote import RemoteTagger

        return RemoteTagger(server, model, batch_size=batch_size, workers=workers, concurrency=concurrency,
                            wait_s=wait or 0.0)
    if model is None:
        raise ConfigError("give the model: --model FILE (or --server URL for a Triton server)")
    for flag, value in (("--concurrency", concurrency), ("--wait", wait)):
        if value is not None:
            raise ConfigError(f"{flag} is for --server")
    return model


def _print_summary(console, summary, path: str, save_attention: Optional[Path], segments: Optional[Path]) -> int:
    """The job's one-line summary; returns the exit code (see the command's help)."""
    from rich.markup import escape

    from ..runtime.video import is_video_source

    if summary.interrupted and summary.partial is not None:
        console.print(escape(f"interrupted: {summary.resumed + summary.processed + summary.failed} rows kept in "
                             f"{summary.partial}; run the same command with --resume to continue"), highlight=False)
        return 130
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
        return 1
    return 0


def register(app: typer.Typer) -> None:
    app.command("infer")(infer_command)
