"""`mlic-edge infer`: label images with any model file (.onnx, .engine, .pt).

Output rows (one per input, in input order; written atomically when --out is given):

* CSV (`.csv`): columns `path, labels, error, score_<class>...`; labels are ';'-joined.
* JSONL (`.jsonl`, and stdout without --out): {"path", "labels": [...], "scores": {class: p},
  "error": null | "message"}.

An undecodable input gets a row with `error` set and no labels/scores, is reported on stderr, and
is skipped; the run goes on. Labels are the classes whose sigmoid score is >= the threshold: the
model's per-class thresholds (from its metadata) unless `threshold` is given.

Without torch: nothing here imports it (the .pt backend does, lazily).
"""
from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageDraw

from ..core.errors import ConfigError, ModelFileError
from ..core.files import atomic_open
from ..core.images import iter_batches, list_inputs
from ..core.progress import progress_bar
from ..metrics import sigmoid
from .backend import open_backend
from .base import Backend

OUTPUT_FORMATS = (".csv", ".jsonl")


@dataclass
class InferSummary:
    total: int
    processed: int
    failed: int
    out: Path | None
    attention_images: int
    seconds: float
    backend: dict[str, Any]


# ----------------------------------------------------------------------------------- writers
class _RowWriter:
    """Rows -> CSV or JSONL on an open text file."""

    def __init__(self, f: IO[str], fmt: str, classes: list[str]):
        self.f, self.fmt, self.classes = f, fmt, classes
        if fmt == ".csv":
            self.csv = csv.writer(f)
            self.csv.writerow(["path", "labels", "error", *[f"score_{c}" for c in classes]])

    def write(self, path: Path, labels: list[str] | None, scores: np.ndarray | None, error: str | None) -> None:
        if self.fmt == ".csv":
            values = [f"{s:.6f}" for s in scores] if scores is not None else [""] * len(self.classes)
            self.csv.writerow([str(path), ";".join(labels or []), error or "", *values])
        else:
            record = {"path": str(path), "labels": labels or [],
                      "scores": ({c: round(float(s), 6) for c, s in zip(self.classes, scores)}
                                 if scores is not None else {}),
                      "error": error}
            self.f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------- attention
def _heat_colors(values: np.ndarray) -> np.ndarray:
    """[0, 1] (H, W) -> uint8 RGB (H, W, 3), a jet-like ramp blue -> cyan -> yellow -> red."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def attention_overlay(image: Image.Image, attention: np.ndarray, caption: str,
                      max_side: int = 640, alpha: float = 0.5) -> Image.Image:
    """One label's cross-attention map (h, w) (on the backbone's feature grid, summing to 1)
    upsampled over the image. The image was squash-resized for the model, so the map is
    stretched back to the image's own aspect ratio."""
    image = image.convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    grid = np.asarray(attention, dtype=np.float32)
    grid = grid / max(float(grid.max()), 1e-12)                                  # (h, w) in [0, 1]
    heat = Image.fromarray(grid).resize(image.size, Image.Resampling.BILINEAR)
    colored = Image.fromarray(_heat_colors(np.asarray(heat)))
    blended = Image.blend(image, colored, alpha)
    draw = ImageDraw.Draw(blended)
    box = draw.textbbox((4, 4), caption)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255))
    return blended


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _save_overlays(out_dir: Path, stem: str, image: Image.Image, attention: np.ndarray,
                   picks: list[tuple[str, float, int]]) -> int:
    """Write <out_dir>/<stem>__<label>.png for every predicted label; returns the count."""
    for label, score, k in picks:
        overlay = attention_overlay(image, attention[k], f"{label} {score:.2f}")
        with atomic_open(out_dir / f"{stem}__{_safe(label)}.png", "wb") as f:
            overlay.save(f, format="PNG")
    return len(picks)


# ----------------------------------------------------------------------------------- main loop
def _thresholds(backend: Backend, threshold: float | None) -> np.ndarray:
    classes = backend.metadata.classes
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
        return np.full(len(classes), threshold)
    values = np.asarray(backend.metadata.thresholds or [0.5] * len(classes), dtype=np.float64)
    if len(values) != len(classes):
        raise ModelFileError(f"{backend.path}: {len(values)} thresholds for {len(classes)} classes")
    return values


def run_inference(
    inputs: str | os.PathLike,
    model: str | os.PathLike | Backend,
    out: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    batch_size: int = 8,
    recursive: bool = False,
    save_attention: str | os.PathLike | None = None,
    device: str = "auto",
    workers: int = 4,
    progress: bool = True,
    stdout: IO[str] | None = None,
    console: Any = None,
) -> InferSummary:
    """Label every image of `inputs` (image / folder / .txt list); see the module docstring."""
    from rich.console import Console
    from rich.markup import escape

    started = time.time()
    console = console or Console(stderr=True)
    if batch_size < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch_size}")
    out_path = Path(out) if out is not None else None
    fmt = out_path.suffix.lower() if out_path is not None else ".jsonl"
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--out must end in {' or '.join(OUTPUT_FORMATS)}, got {out_path}")
    paths = list_inputs(inputs, recursive=recursive)               # DatasetError when empty
    backend = model if isinstance(model, Backend) else open_backend(model, device=device)
    attention_dir = Path(save_attention) if save_attention is not None else None
    if attention_dir is not None:
        if not backend.has_attention:
            raise ModelFileError(f"{backend.path}: has no 'attention' output for --save-attention; "
                                 f"export it with `mlic-edge export --attention` (checkpoints always have it)")
        attention_dir.mkdir(parents=True, exist_ok=True)
    classes = backend.metadata.classes
    limits = _thresholds(backend, threshold)                      # (K,)

    processed = failed = drawn = 0
    stems: dict[str, int] = {}
    overlay_jobs: list[Future] = []
    sink = atomic_open(out_path, "w", encoding="utf-8", newline="") if out_path else _Borrowed(stdout or sys.stdout)
    with sink as f, ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlic-overlay") as drawer, \
            progress_bar(console, disable=not progress) as bar:
        writer = _RowWriter(f, fmt, classes)
        task = bar.add_task("infer", total=len(paths), info="")
        for batch in iter_batches(paths, backend.metadata.preprocess, batch_size, workers=workers,
                                  keep_originals=attention_dir is not None):
            outputs = backend.predict(batch.images) if len(batch.indices) else {}
            scores = sigmoid(outputs["logits"]) if outputs else np.empty((0, len(classes)))  # (n, K)
            rows: list[tuple[int, Path, list[str] | None, np.ndarray | None, str | None]] = []
            for i, (index, path) in enumerate(zip(batch.indices, batch.paths)):
                chosen = np.flatnonzero(scores[i] >= limits)
                rows.append((index, path, [classes[k] for k in chosen], scores[i], None))
                if attention_dir is not None and len(chosen):
                    stem = _safe(path.stem)
                    stems[stem] = stems.get(stem, 0) + 1
                    stem = stem if stems[stem] == 1 else f"{stem}_{stems[stem]}"
                    picks = [(classes[k], float(scores[i, k]), int(k)) for k in chosen]
                    overlay_jobs.append(drawer.submit(_save_overlays, attention_dir, stem, batch.originals[i],
                                                      outputs["attention"][i], picks))
            for index, path, message in batch.failures:
                rows.append((index, path, None, None, message))
                bar.console.print(f"[yellow]skipped[/yellow] {escape(message)}", highlight=False)
            for _, path, labels, row_scores, error in sorted(rows, key=lambda r: r[0]):
                writer.write(path, labels, row_scores, error)
            processed += len(batch.indices)
            failed += len(batch.failures)
            elapsed = max(time.time() - started, 1e-6)
            bar.update(task, advance=len(batch.indices) + len(batch.failures),
                       info=f"{processed / elapsed:.1f} img/s")
        drawn = sum(job.result() for job in overlay_jobs)
    info = backend.describe()
    if not isinstance(model, Backend):
        backend.close()
    return InferSummary(total=len(paths), processed=processed, failed=failed, out=out_path,
                        attention_images=drawn, seconds=time.time() - started, backend=info)


class _Borrowed:
    """Context manager over a stream we do not own (stdout): flushed, never closed."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def __enter__(self) -> IO[str]:
        return self.stream

    def __exit__(self, *exc) -> None:
        self.stream.flush()

