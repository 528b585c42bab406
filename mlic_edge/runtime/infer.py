"""`mlic-edge infer`: tag images, folders, lists, video files and live streams with any model file
(.onnx, .engine, .pt), through the same `Tagger` an application uses (runtime/tagger.py).

Output rows (one per input, in input order; one per tagged frame for video):

* CSV (`.csv`): columns `path, labels, error, score_<class>...`; video: `path, frame, time_s,
  labels, error, score_<class>...` (`path` is the source); labels are ';'-joined.
* JSONL (`.jsonl`, and stdout without --out): {"path", ["frame", "time_s",] "labels": [...],
  "scores": {class: p}, "error": null | "message"}.

Jobs that survive a crash: with --out, rows go to `<out>.partial` as they are produced (flushed
after every batch, fsynced every few seconds), beside a job file `<out>.partial.json` (inputs,
the model file's path, size and time, batch, threshold); the partial file is renamed to `<out>` when the job ends. After a
kill (Ctrl-C, OOM, power), `--resume` keeps the complete batches already written, skips their
inputs and appends the rest: batch k always holds inputs k*B .. (k+1)*B-1, so the final file is
byte for byte an uninterrupted run's. A job file that names other inputs, another model or other
options is refused in one line, and so is a new job over a partial one without --resume.

An undecodable input gets a row with `error` set and no labels/scores, is reported on stderr, and
is skipped; the run goes on. Labels are the classes whose sigmoid score is >= the threshold: the
model's per-class thresholds (from its metadata) unless `threshold` is given.

Without torch: nothing here imports it (the .pt backend does, lazily).
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..core.errors import ConfigError
from ..core.files import atomic_open, atomic_write_text
from ..core.images import count_inputs, iter_inputs
from ..core.preprocess import pil
from ..core.progress import progress_bar
from .base import Backend
from .model import Prediction
from .tagger import BaseTagger, Tagger

if TYPE_CHECKING:
    from PIL import Image

OUTPUT_FORMATS = (".csv", ".jsonl")
JOB_FORMAT = "mlic-edge-infer-job/1"
FSYNC_EVERY_S = 5.0


@dataclass
class InferSummary:
    total: int | None                 # inputs (video: frames to tag, when the container says)
    processed: int                    # tagged in this run
    failed: int                       # unreadable inputs / broken frames in this run
    out: Path | None
    attention_images: int
    seconds: float
    backend: dict[str, Any]
    resumed: int = 0                  # rows kept from an interrupted run (--resume)
    segments: int | None = None       # rows written to --segments
    interrupted: bool = False         # Ctrl-C on a folder job: its rows are kept for --resume
    partial: Path | None = None       # where those rows are


# ----------------------------------------------------------------------------------- writers
class RowWriter:
    """Predictions -> CSV or JSONL rows on an open text file; video rows add frame and time_s."""

    def __init__(self, f: IO[str], fmt: str, classes: list[str], *, video: bool = False, header: bool = True):
        self.f, self.fmt, self.classes, self.video = f, fmt, classes, video
        if fmt == ".csv":
            self.csv = csv.writer(f)
            if header:
                self.csv.writerow(["path", *(["frame", "time_s"] if video else []), "labels", "error",
                                   *[f"score_{c}" for c in classes]])

    def write(self, prediction: Prediction) -> None:
        if self.fmt != ".csv":
            self.f.write(json.dumps(prediction.to_dict()) + "\n")
            return
        scores = ([f"{prediction.scores[c]:.6f}" for c in self.classes] if prediction.ok
                  else [""] * len(self.classes))
        frame = [prediction.frame, f"{prediction.time_s:.3f}"] if self.video else []
        self.csv.writerow([prediction.source, *frame, ";".join(prediction.labels), prediction.error or "", *scores])


# ----------------------------------------------------------------------------------- attention
def _heat_colors(values: np.ndarray) -> np.ndarray:
    """[0, 1] (H, W) -> uint8 RGB (H, W, 3), a jet-like ramp blue -> cyan -> yellow -> red."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def attention_overlay(image: "Image.Image", attention: np.ndarray, caption: str,
                      max_side: int = 640, alpha: float = 0.5) -> "Image.Image":
    """One label's cross-attention map (h, w) (on the backbone's feature grid, summing to 1)
    upsampled over the image. The image was squash-resized for the model, so the map is
    stretched back to the image's own aspect ratio."""
    PIL = pil()
    image = image.convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             PIL.Image.Resampling.BILINEAR)
    grid = np.asarray(attention, dtype=np.float32)
    grid = grid / max(float(grid.max()), 1e-12)                                  # (h, w) in [0, 1]
    heat = PIL.Image.fromarray(grid).resize(image.size, PIL.Image.Resampling.BILINEAR)
    colored = PIL.Image.fromarray(_heat_colors(np.asarray(heat)))
    blended = PIL.Image.blend(image, colored, alpha)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(blended)
    box = draw.textbbox((4, 4), caption)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255))
    return blended


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _save_overlays(out_dir: Path, stem: str, image: "Image.Image", attention: np.ndarray,
                   picks: list[tuple[str, float, int]]) -> int:
    """Write <out_dir>/<stem>__<label>.png for every predicted label; returns the count."""
    for label, score, k in picks:
        overlay = attention_overlay(image, attention[k], f"{label} {score:.2f}")
        with atomic_open(out_dir / f"{stem}__{_safe(label)}.png", "wb") as f:
            overlay.save(f, format="PNG")
    return len(picks)



# ----------------------------------------------------------------------------------- jobs
class RowFile:
    """The rows of one --out file: written to `<out>.partial` as they come, renamed to `<out>` at
    the end. A folder/list job also keeps a job file beside it, so `--resume` can continue it."""

    def __init__(self, out: Path, fmt: str):
        self.out, self.fmt = out, fmt
        self.partial = out.with_name(out.name + ".partial")
        self.job_file = out.with_name(out.name + ".partial.json")
        self.f: IO[str] | None = None
        self._synced = time.monotonic()

    def start(self, job: dict[str, Any] | None, resume: bool) -> bool:
        """Open a new partial file (True: it needs a header), or check that the partial file there
        is this job's (False: `keep_complete_batches` then opens it for appending)."""
        if self.partial.exists() and not resume:
            raise ConfigError(f"{self.partial}: rows of an interrupted job are there; add --resume to "
                              f"continue it, or delete the file to start over")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.partial.exists():
            saved = self._read_job()
            if job is not None and saved != job:
                changed = sorted(k for k in set(job) | set(saved) if job.get(k) != saved.get(k))
                raise ConfigError(f"{self.job_file}: the interrupted job differs in {', '.join(changed)}; "
                                  f"run it with the same inputs, model and options, or delete "
                                  f"{self.partial.name} to start over")
            return False
        if job is not None:
            atomic_write_text(self.job_file, json.dumps(job, indent=1) + "\n")
        self.f = open(self.partial, "w", encoding="utf-8", newline="")
        return True

    def _read_job(self) -> dict[str, Any]:
        try:
            return json.loads(self.job_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigError(f"{self.job_file}: missing or unreadable; cannot tell which job "
                              f"{self.partial.name} belongs to (delete it to start over)") from None

    def keep_complete_batches(self, inputs: Iterator[Path], batch: int) -> int:
        """--resume: keep the whole batches of complete rows in the partial file (a kill may cut
        the last row or batch short), check that they are the first inputs, truncate the rest and
        open for appending. Consumes the kept inputs from `inputs`; returns how many."""
        offsets, sources = self._complete_rows()                   # end offset and source of each row
        keep = len(sources) // batch * batch
        for row, source in enumerate(sources[:keep]):
            expected = next(inputs, None)
            if expected is None or str(expected) != source:
                raise ConfigError(f"{self.partial}: row {row + 1} is {source!r}, but input {row + 1} is now "
                                  f"{str(expected)!r}; the inputs changed since the job was interrupted")
        os.truncate(self.partial, offsets[keep])
        self.f = open(self.partial, "a", encoding="utf-8", newline="")
        return keep

    def _complete_rows(self) -> tuple[list[int], list[str]]:
        """Byte offsets after the header and after each complete row, and each row's source."""
        offsets, sources, position = [], [], 0
        with open(self.partial, "rb") as f:
            for number, line in enumerate(f):
                if not line.endswith(b"\n"):
                    break                                          # cut short by the kill
                position += len(line)
                if number == 0 and self.fmt == ".csv":
                    offsets.append(position)                       # the header
                    continue
                if not offsets:
                    offsets.append(0)
                text = line.decode("utf-8", errors="replace")
                try:
                    source = next(csv.reader([text]))[0] if self.fmt == ".csv" else json.loads(text)["path"]
                except (ValueError, KeyError, IndexError, StopIteration):
                    break                                          # a torn row: keep what precedes it
                sources.append(source)
                offsets.append(position)
        if not offsets:
            offsets.append(0)
        return offsets, sources

    def batch_done(self) -> None:
        """Rows reach the OS after every batch (a killed process loses none of them) and the disk
        every few seconds (a power cut loses at most those)."""
        assert self.f is not None
        self.f.flush()
        if time.monotonic() - self._synced > FSYNC_EVERY_S:
            os.fsync(self.f.fileno())
            self._synced = time.monotonic()

    def finish(self) -> None:
        """The complete file appears under its name; the job file goes."""
        self.close()
        os.replace(self.partial, self.out)
        with contextlib.suppress(FileNotFoundError):
            self.job_file.unlink()

    def close(self) -> None:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None


def _job(inputs: Path, recursive: bool, tagger: BaseTagger, batch: int, threshold: float | None, fmt: str) -> dict:
    """What makes two runs the same job: the inputs, the model's bytes (a served model: its URL) and
    the options that change rows."""
    url = getattr(tagger, "url", None)
    if url is not None:                                  # RemoteTagger: the server's model
        return {"format": JOB_FORMAT, "inputs": str(inputs.resolve()), "recursive": recursive, "model": url,
                "batch": batch, "threshold": threshold, "output": fmt}
    model = tagger.backend.path.stat()
    return {"format": JOB_FORMAT, "inputs": str(inputs.resolve()), "recursive": recursive,
            "model": str(tagger.backend.path.resolve()), "model_bytes": model.st_size,
            "model_mtime_ns": model.st_mtime_ns, "batch": batch, "threshold": threshold, "output": fmt}


def _frames_to_tag(info: dict[str, Any], every: int | None, fps: float | None) -> int | None:
    """How many frames of a file `--every` / `--fps` will tag, for the progress bar (None: the
    container does not say). A live source is not asked: opening it twice means connecting twice."""
    frames = info.get("frames")
    if not frames:
        return None
    if every:
        return -(-frames // every)
    if fps and info.get("duration_s"):
        return int(info["duration_s"] * fps) + 1
    return frames


class _Borrowed:
    """Context manager over a stream we do not own (stdout): flushed, never closed."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __enter__(self) -> IO[str]:
        return self.stream

    def __exit__(self, *exc) -> None:
        self.stream.flush()


# ----------------------------------------------------------------------------------- main loop
def run_inference(
    inputs: str | os.PathLike,
    model: str | os.PathLike | Backend | BaseTagger,
    out: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    recursive: bool = False,
    save_attention: str | os.PathLike | None = None,
    device: str = "auto",
    workers: int = 2,
    progress: bool = True,
    stdout: IO[str] | None = None,
    console: Any = None,
    resume: bool = False,
    every: int | None = None,
    fps: float | None = None,
    segments: str | os.PathLike | None = None,
    segment_options: dict[str, Any] | None = None,
) -> InferSummary:
    """Tag every image of `inputs` (image / folder / .txt list), or the frames of a video file,
    URL or camera; see the module docstring."""
    from ..core.console import make_console

    from .video import is_video_source

    started = time.time()
    console = console or make_console(stderr=True)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    out_path = Path(out) if out is not None else None
    fmt = out_path.suffix.lower() if out_path is not None else ".jsonl"
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, got {out_path}")
    video = is_video_source(inputs)
    _check_mode(video, out_path, resume, every, fps, segments, save_attention)
    total = None if video else count_inputs(inputs, recursive)      # DatasetError when empty
    tagger = model if isinstance(model, BaseTagger) else Tagger(model, device=device, batch_size=batch_size,
                                                           workers=workers)
    try:
        tagger.limits(threshold)                                     # a bad --threshold: before any work
        run = _run_video if video else _run_images
        summary = run(tagger, inputs, out_path, fmt, total=total, threshold=threshold, batch=batch_size,
                      recursive=recursive, save_attention=save_attention, progress=progress, stdout=stdout,
                      console=console, resume=resume, every=every, fps=fps, segments=segments,
                      segment_options=segment_options or {})
        summary.backend = tagger.describe()
    finally:
        if not isinstance(model, BaseTagger):
            tagger.close()
    summary.seconds = time.time() - started
    return summary


def _check_mode(video: bool, out: Path | None, resume: bool, every, fps, segments, save_attention) -> None:
    if video:
        if resume:
            raise ConfigError("--resume continues image folders and lists; a video is tagged again from its start")
        if save_attention is not None:
            raise ConfigError("--save-attention draws over images; it is not available for video")
        if segments is not None and Path(segments).suffix.lower() != ".csv":
            raise ConfigError(f"--segments must end in .csv, got {segments}")
        return
    for name, value in (("--every", every), ("--fps", fps), ("--segments", segments)):
        if value is not None:
            raise ConfigError(f"{name} is for video sources (.mp4, .mkv, ..., rtsp://, /dev/video0)")
    if resume and out is None:
        raise ConfigError("--resume needs --out (the file whose partial rows it continues)")


def _run_images(tagger: BaseTagger, inputs, out_path: Path | None, fmt: str, *, total: int, threshold, batch: int,
                recursive: bool, save_attention, progress: bool, stdout, console, resume: bool,
                **_video_options) -> InferSummary:
    from rich.markup import escape

    attention_dir = _attention_dir(tagger, save_attention)
    paths = iter_inputs(inputs, recursive)
    rows = RowFile(out_path, fmt) if out_path is not None else None
    resumed = 0
    if rows is not None:
        header = rows.start(_job(Path(inputs), recursive, tagger, batch, threshold, fmt), resume)
        if not header:
            resumed = rows.keep_complete_batches(paths, batch)
        f = rows.f
    else:
        header, f = True, stdout or sys.stdout
    writer = RowWriter(f, fmt, tagger.classes, header=header)
    summary = InferSummary(total=total, processed=0, failed=0, out=out_path, attention_images=0, seconds=0.0,
                           backend={}, resumed=resumed, partial=rows.partial if rows else None)
    overlays = _Overlays(attention_dir, tagger.classes) if attention_dir is not None else None
    started = time.time()
    try:
        with progress_bar(console, disable=not progress) as bar:
            task = bar.add_task("infer", total=total, completed=resumed, info="")
            done = 0
            for prediction in tagger.iter_predict(paths, threshold, batch_size=batch,
                                                  with_attention=overlays is not None):
                writer.write(prediction)
                done += 1
                if prediction.ok:
                    summary.processed += 1
                    if overlays is not None:
                        overlays.submit(prediction)
                else:
                    summary.failed += 1
                    bar.console.print(f"[yellow]skipped[/yellow] {escape(prediction.error)}", highlight=False)
                if done % batch == 0:
                    if rows is not None:
                        rows.batch_done()
                    rate = summary.processed / max(time.time() - started, 1e-6)
                    bar.update(task, completed=resumed + done, info=f"{rate:.1f} img/s")
            bar.update(task, completed=resumed + done)
        if overlays is not None:
            summary.attention_images = overlays.finish()
    except KeyboardInterrupt:
        if rows is None:
            raise
        rows.close()                                    # the rows so far stay for --resume
        summary.interrupted = True
        return summary
    except BaseException:
        if rows is not None:
            rows.close()
        raise
    _finish(rows, f)
    return summary


def _attention_dir(tagger: BaseTagger, save_attention) -> Path | None:
    """The --save-attention folder, made; the one-line error first when the model has no attention."""
    if save_attention is None:
        return None
    if not tagger.has_attention:
        tagger.predict(np.zeros((1, 1, 3), np.uint8), with_attention=True)   # raises the one-line error
    Path(save_attention).mkdir(parents=True, exist_ok=True)
    return Path(save_attention)


def _finish(rows: RowFile | None, stream: IO[str]) -> None:
    """The job ended: its rows appear under their name (or are flushed to stdout)."""
    if rows is not None:
        rows.finish()
    else:
        stream.flush()


def _draw_overlays(out_dir: Path, stem: str, path: str, attention: np.ndarray,
                   picks: list[tuple[str, float, int]]) -> int:
    """The overlays of one image, drawn over it at its own size (the model saw it decoded at a
    reduced scale; the picture a person looks at is read again in full)."""
    from ..core.preprocess import load_image

    return _save_overlays(out_dir, stem, load_image(path), attention, picks)


class _Overlays:
    """Attention overlays drawn by two threads beside the main loop, at most `backlog` images
    waiting, so memory stays flat on long jobs."""

    def __init__(self, out_dir: Path, classes: list[str], backlog: int = 32):
        self.out_dir, self.backlog = out_dir, backlog
        self.index = {c: k for k, c in enumerate(classes)}
        self.stems: dict[str, int] = {}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlic-overlay")
        self.pending: deque[Future] = deque()
        self.drawn = 0

    def submit(self, prediction: Prediction) -> None:
        if not prediction.labels:
            return
        stem = _safe(Path(prediction.source).stem)
        self.stems[stem] = self.stems.get(stem, 0) + 1
        stem = stem if self.stems[stem] == 1 else f"{stem}_{self.stems[stem]}"
        picks = [(label, prediction.scores[label], self.index[label]) for label in prediction.labels]
        self.pending.append(self.pool.submit(_draw_overlays, self.out_dir, stem, prediction.source,
                                             prediction.attention, picks))
        while self.pending and (self.pending[0].done() or len(self.pending) > self.backlog):
            self.drawn += self.pending.popleft().result()

    def finish(self) -> int:
        while self.pending:
            self.drawn += self.pending.popleft().result()
        self.pool.shutdown()
        return self.drawn


def _run_video(tagger: BaseTagger, source, out_path: Path | None, fmt: str, *, threshold, batch: int, progress: bool,
               stdout, console, every, fps, segments, segment_options: dict, **_image_options) -> InferSummary:
    """Tag the frames of a video file, URL or camera; rows as they come, segments at the end.
    Ctrl-C ends a live source the normal way: what was tagged is kept and the segments closed."""
    from rich.markup import escape

    from .segments import SegmentTracker, write_segments
    from .video import is_live_source, video_info

    tracker = SegmentTracker(tagger.classes, tagger.limits(threshold), **segment_options) \
        if segments is not None else None
    total = None if is_live_source(source) else _frames_to_tag(video_info(source), every, fps)
    rows = RowFile(out_path, fmt) if out_path is not None else None
    if rows is not None:
        rows.start(None, resume=False)
        f = rows.f
    else:
        f = stdout or sys.stdout
    writer = RowWriter(f, fmt, tagger.classes, video=True)
    summary = InferSummary(total=total, processed=0, failed=0, out=out_path, attention_images=0, seconds=0.0,
                           backend={})
    closed: list = []
    started = time.time()
    order = tagger.classes
    try:
        with progress_bar(console, disable=not progress) as bar:
            task = bar.add_task("infer", total=total, info="")

            def report(problem) -> None:
                summary.failed += 1
                colour = "red" if getattr(problem, "fatal", False) else "yellow"
                bar.console.print(f"[{colour}]skipped[/{colour}] {escape(problem.message)}", highlight=False)

            for prediction in tagger.stream(source, every=every, fps=fps, threshold=threshold, batch_size=batch,
                                            on_error=report):
                writer.write(prediction)
                summary.processed += 1
                if tracker is not None:
                    closed += tracker.update(prediction.time_s, np.array([prediction.scores[c] for c in order]))
                if summary.processed % batch == 0:
                    if rows is not None:
                        rows.batch_done()
                    rate = summary.processed / max(time.time() - started, 1e-6)
                    bar.update(task, completed=summary.processed,
                               info=f"{rate:.1f} frames/s, t={prediction.time_s:.1f} s")
            bar.update(task, completed=summary.processed)
    except KeyboardInterrupt:
        summary.interrupted = True                       # a live source's normal end: keep it all
    except BaseException:
        if rows is not None:
            rows.close()
        raise
    _finish(rows, f)
    if tracker is not None:
        found = sorted(closed + tracker.finish(), key=lambda s: (s.start_s, s.label))
        write_segments(segments, found)
        summary.segments = len(found)
    return summary
