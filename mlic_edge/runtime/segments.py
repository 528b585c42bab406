"""Tags over time: per-frame scores of a video turned into segments "label from t0 to t1".

Per class, the raw sigmoid scores of the sampled frames are smoothed, then a label turns on when
the smoothed score reaches its class threshold (the "on" threshold) and turns off only when it
falls below a lower "off" threshold (hysteresis), so a label does not flicker on and off between
neighbouring frames when its score hovers around the threshold.

Smoothing (causal: a frame's value uses only that frame and earlier ones, so it works live):
  ema     s_t = alpha * x_t + (1 - alpha) * s_{t-1}, s_0 = x_0. The default, alpha 0.5: when a
          score jumps from ~0 to ~1 at a scene change the smoothed score is ~0.5 on that very
          frame and ~0.75 on the next, so with thresholds around 0.5 a segment starts and ends
          within one sampled frame of the change, while a one-frame blip of 0.9 only reaches
          0.45 and does not start a segment at threshold 0.5.
  median  median of the last `window` raw scores (window odd, default 3): removes spikes and
          dips up to window // 2 frames long, and delays every change by window // 2 frames.
  none    raw scores; labels follow the model frame by frame.

Hysteresis (default 0.1): off threshold = max(on - hysteresis, on / 2) per class. The on / 2
floor keeps a low threshold (e.g. 0.05) from getting an off threshold of 0, which no score
could ever fall below. With 0.1, a label whose score hovers at 0.45-0.55 around a 0.5 threshold
stays on instead of toggling each frame.

A segment runs from the first to the last sampled frame on which the label is on; its peak
score is the highest raw (unsmoothed) score inside it. min_frames (default 1: keep all) drops
segments with fewer sampled frames, e.g. 3 to ignore labels seen on only one or two frames.
"""
from __future__ import annotations

import csv
import math
import numbers
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError, DatasetError
from ..core.files import atomic_open

SMOOTHING = ("ema", "median", "none")
CSV_HEADER = ("label", "start_s", "end_s", "peak_score", "frames")


@dataclass
class Segment:
    label: str
    start_s: float      # time of the first sampled frame where the label is on
    end_s: float        # time of the last sampled frame where the label is on
    peak_score: float   # max RAW (unsmoothed) score of the label inside the segment
    frames: int = 0     # sampled frames inside the segment


def off_thresholds(thresholds: np.ndarray, hysteresis: float) -> np.ndarray:
    """(K,) thresholds below which an "on" label turns off: max(on - hysteresis, on / 2)."""
    return np.maximum(thresholds - hysteresis, thresholds / 2)


class SegmentTracker:
    """Feed the scores of each sampled frame in time order with `update`; it returns the segments
    that frame closed. `finish` closes the rest at the end of the stream."""

    def __init__(self, classes: list[str], thresholds: Sequence[float], *, smoothing: str = "ema",
                 alpha: float = 0.5, window: int = 3, hysteresis: float = 0.1, min_frames: int = 1):
        self.classes = list(classes)
        on = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        _check_options(len(self.classes), on, smoothing, alpha, window, hysteresis, min_frames)
        self.smoothing, self.alpha, self.window, self.min_frames = smoothing, float(alpha), int(window), int(min_frames)
        self.on_thresholds = on                                    # (K,)
        self.off_thresholds = off_thresholds(on, float(hysteresis))  # (K,)
        self._reset()

    def _reset(self) -> None:
        k = len(self.classes)
        self._smoothed: np.ndarray | None = None    # (K,) EMA state
        self._history: deque[np.ndarray] = deque(maxlen=self.window)  # last raw (K,) rows, median
        self._on = np.zeros(k, dtype=bool)
        self._start = np.zeros(k)                   # per class, valid where _on
        self._end = np.zeros(k)
        self._peak = np.zeros(k)
        self._frames = np.zeros(k, dtype=np.int64)

    def _smooth(self, x: np.ndarray) -> np.ndarray:
        """(K,) smoothed scores after adding the raw scores `x` (K,)."""
        if self.smoothing == "ema":
            self._smoothed = x if self._smoothed is None else self.alpha * x + (1 - self.alpha) * self._smoothed
            return self._smoothed
        if self.smoothing == "median":
            self._history.append(x)
            return np.median(np.stack(self._history), axis=0)
        return x

    def update(self, time_s: float, scores: np.ndarray) -> list[Segment]:
        """Add one sampled frame: `scores` (K,) raw sigmoid scores at `time_s`. Returns the
        segments this frame closed (labels that turned off), in class order."""
        x = np.asarray(scores, dtype=np.float64).reshape(-1)
        if x.shape[0] != len(self.classes):
            raise ValueError(f"scores have {x.shape[0]} values, the tracker has {len(self.classes)} classes")
        smoothed = self._smooth(x)
        turn_off = self._on & (smoothed < self.off_thresholds)
        turn_on = ~self._on & (smoothed >= self.on_thresholds)
        closed = self._close(np.flatnonzero(turn_off))
        self._on &= ~turn_off
        self._start[turn_on] = time_s
        self._peak[turn_on] = -np.inf
        self._frames[turn_on] = 0
        self._on |= turn_on
        self._end[self._on] = time_s
        self._peak[self._on] = np.maximum(self._peak[self._on], x[self._on])
        self._frames[self._on] += 1
        return closed

    def finish(self) -> list[Segment]:
        """Close every open segment (end of stream) and return them; the tracker starts afresh
        (smoothing state included) for a next stream."""
        closed = self._close(np.flatnonzero(self._on))
        self._reset()
        return closed

    def _close(self, columns: np.ndarray) -> list[Segment]:
        """Segments of the open labels `columns`, without those shorter than min_frames."""
        return [Segment(self.classes[k], float(self._start[k]), float(self._end[k]), float(self._peak[k]),
                        int(self._frames[k]))
                for k in columns if self._frames[k] >= self.min_frames]

    @property
    def active(self) -> list[str]:
        """Labels on now (for live display), in class order."""
        return [self.classes[k] for k in np.flatnonzero(self._on)]


def _check_options(num_classes: int, thresholds: np.ndarray, smoothing: str, alpha: float, window: int,
                   hysteresis: float, min_frames: int) -> None:
    if thresholds.shape[0] != num_classes:
        raise ConfigError(f"{thresholds.shape[0]} thresholds for {num_classes} classes")
    if not np.all((thresholds >= 0) & (thresholds <= 1)):
        raise ConfigError("thresholds must lie in [0, 1]")
    if smoothing not in SMOOTHING:
        raise ConfigError(f"smoothing must be one of {', '.join(SMOOTHING)}, got {smoothing!r}")
    if not (isinstance(alpha, numbers.Real) and 0 < alpha <= 1):
        raise ConfigError(f"alpha (EMA weight of the newest frame) must be in (0, 1], got {alpha!r}")
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1 or window % 2 == 0:
        raise ConfigError(f"window (median smoothing) must be an odd whole number >= 1, got {window!r}")
    if not (isinstance(hysteresis, numbers.Real) and 0 <= hysteresis < 1):
        raise ConfigError(f"hysteresis must be in [0, 1), got {hysteresis!r}")
    if isinstance(min_frames, bool) or not isinstance(min_frames, numbers.Integral) or min_frames < 1:
        raise ConfigError(f"min_frames must be a whole number >= 1, got {min_frames!r}")


def segments_from_scores(times: Sequence[float], scores: np.ndarray, classes: list[str],
                         thresholds: Sequence[float], **options) -> list[Segment]:
    """Segments of a whole clip: `times` (T,) seconds, `scores` (T, K) raw sigmoid scores, in
    time order; `options` as for SegmentTracker. Sorted by (start_s, label)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(times):
        raise ValueError(f"scores must be (T, K) with T = len(times) = {len(times)}, got {scores.shape}")
    tracker = SegmentTracker(classes, thresholds, **options)
    segments = []
    for time_s, row in zip(times, scores):
        segments.extend(tracker.update(float(time_s), row))
    segments.extend(tracker.finish())
    return sorted(segments, key=lambda s: (s.start_s, s.label))


def write_segments(path: str | os.PathLike, segments: Sequence[Segment]) -> None:
    """CSV `label,start_s,end_s,peak_score,frames` (times to 3 decimals, scores to 6), written
    atomically: a crash leaves the old file or the complete new one."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for s in segments:
            writer.writerow([s.label, f"{s.start_s:.3f}", f"{s.end_s:.3f}", f"{s.peak_score:.6f}", s.frames])


def read_segments(path: str | os.PathLike) -> list[Segment]:
    """Segments from a CSV written by write_segments; DatasetError naming the file and line on a
    missing file, a wrong header or a malformed row."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such segments file") from None
    if not rows or tuple(rows[0]) != CSV_HEADER:
        raise DatasetError(f"{path}:1: header must be {','.join(CSV_HEADER)}")
    segments = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            label, start_s, end_s, peak, frames = row
            segment = Segment(label, float(start_s), float(end_s), float(peak), int(frames))
        except ValueError:
            raise DatasetError(f"{path}:{line}: expected label,start_s,end_s,peak_score,frames, "
                               f"got {','.join(row)!r}") from None
        if not all(math.isfinite(v) for v in (segment.start_s, segment.end_s, segment.peak_score)):
            raise DatasetError(f"{path}:{line}: times and score must be finite numbers")
        segments.append(segment)
    return segments
