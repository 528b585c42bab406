"""Frames from video files, stream URLs and cameras, for tagging video: decoded with PyAV in a
background thread while the caller runs the model on the previous frames.

Why a thread and a bounded queue: decoding (FFmpeg releases the GIL) overlaps with inference, and
a slow model cannot make a live stream pile up frames in memory: at most `queue_size` decoded
frames wait. Only the sampled frames (`every` / `fps`) are converted to RGB and transformed.

Sources: a file with a video suffix, a URL (rtsp, rtmp, http(s), udp, tcp, srt) or a camera
device (/dev/videoN, read through v4l2). URLs and cameras are "live": when they drop they are
reopened up to `retries` times in a row, and the drop is reported in the stream as a FrameError
rather than raised, so a long-running tagger survives a camera reboot. Files are never reopened,
nor is a URL whose container states a duration (an https://.../clip.mp4, a finished HLS
playlist): it is read once, like a file. `live=True/False` overrides the guess.

Times: `Frame.time_s` is presentation time in seconds from the stream's start. After a
reconnect it continues from the last frame received (plus one frame period), so times stay
increasing over the whole iteration; it is time of video received, not wall-clock time.

Needs PyAV (`pip install av`), imported on first use, so `import mlic_edge.core` needs numpy only.
"""
from __future__ import annotations

import math
import numbers
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, ConfigError, DatasetError, one_line

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
CAMERA_PREFIX = "/dev/video"

FALLBACK_RATE = 25.0   # frames/s assumed when a stream states no rate (FFmpeg's own default)
_POLL_S = 0.1          # how often a blocked put/get looks at the stop event / the thread


def av():
    """The PyAV package, imported on first use; one-line error where it is missing."""
    try:
        import av
        import av.error
    except ImportError:
        raise BackendUnavailable("reading video needs PyAV: pip install av") from None
    return av


def is_video_source(source: str | os.PathLike) -> bool:
    """True for a path with a video suffix, a URL with a live/stream scheme, or a camera
    device (/dev/video*)."""
    text = os.fspath(source)
    return is_live_source(text) or Path(text).suffix.lower() in VIDEO_SUFFIXES


def is_live_source(source: str | os.PathLike) -> bool:
    """URLs and camera devices (they can drop and be reconnected); files are not live."""
    text = os.fspath(source)
    return text.lower().startswith(LIVE_SCHEMES) or _is_camera(text)


def _is_camera(text: str) -> bool:
    return text.startswith(CAMERA_PREFIX) and text[len(CAMERA_PREFIX):].isdigit()


def display_name(source: str | os.PathLike) -> str:
    """The source as messages name it: URL passwords hidden (rtsp://user:***@cam/1)."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", os.fspath(source))


@dataclass
class Frame:
    index: int          # 0-based number of the frame among all decoded frames of the source
    time_s: float       # presentation time in seconds from the stream's start (see module doc)
    image: np.ndarray   # (H, W, 3) uint8 RGB
    payload: Any = None # transform(image) when a transform was given (computed in the decode thread)


@dataclass
class FrameError:
    index: int | None   # frame number where known
    time_s: float | None
    message: str        # one line naming the source and the problem
    fatal: bool = False # True when the source is given up; the iterator then ends


def open_video(source: str | os.PathLike, *, live: bool | None = None, timeout_s: float = 10.0):
    """An av container for `source` with at least one video stream. Raises DatasetError (one
    line, naming the source) when it is missing, unreadable or holds no video."""
    AV = av()
    text = os.fspath(source)
    name = display_name(text)
    live = is_live_source(text) if live is None else live
    if not is_live_source(text) and not Path(text).exists():
        raise DatasetError(f"{name}: no such video file")
    kwargs: dict[str, Any] = {}
    if _is_camera(text):
        kwargs["format"] = "v4l2"
    if text.lower().startswith(("rtsp://", "rtsps://")):
        kwargs["options"] = {"rtsp_transport": "tcp"}   # UDP loses packets (grey smears) on busy links
    if live:
        kwargs["timeout"] = timeout_s                   # a dead URL fails instead of hanging
    try:
        container = AV.open(text, **kwargs)
    except (AV.error.FFmpegError, OSError) as e:
        raise DatasetError(f"{name}: cannot open video ({_one_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{name}: no video stream")
    return container


def video_info(source: str | os.PathLike, *, timeout_s: float = 10.0) -> dict:
    """What a progress bar needs: frames (None when unknown, e.g. live or some .mkv), fps
    (average rate), duration_s (None when unknown), width, height, codec."""
    container = open_video(source, timeout_s=timeout_s)
    try:
        stream = container.streams.video[0]
        duration_s = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000          # AV_TIME_BASE units
        rate = stream.average_rate or stream.guessed_rate
        return {"frames": int(stream.frames) or None, "fps": float(rate) if rate else None,
                "duration_s": duration_s, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "codec": stream.codec_context.name,
                "live": is_live_source(source)}
    finally:
        container.close()


class _Sampler:
    """Which frames to keep: every N-th index, or the first frame at or after each 1/fps slot of
    video time (each slot taken at most once), or all of them."""

    def __init__(self, every: int | None, fps: float | None):
        self.every, self.fps = every, fps
        self.next_slot = 0   # index of the next 1/fps slot still to fill

    def keep(self, index: int, time_s: float) -> bool:
        if self.every is not None:
            return index % self.every == 0
        if self.fps is None:
            return True
        position = time_s * self.fps + 1e-6   # tolerance: 0.29 s * 100 is 28.999999999999996
        if position < self.next_slot:
            return False
        self.next_slot = math.floor(position) + 1
        return True


class _End:
    """Queue marker: the decode thread finished."""


@dataclass
class _Failure:
    """Queue marker: the decode thread died of an unexpected exception (re-raised to the caller)."""
    error: BaseException


class _Decoder:
    """The decode thread's state. It never refers to the FrameStream, so dropping the stream
    (break, garbage collection) triggers its finalizer, which sets `stop`."""

    def __init__(self, source: str, container, *, sampler: _Sampler, transform, queue_size: int,
                 live: bool, retries: int, retry_delay_s: float, stable_s: float, timeout_s: float):
        self.source, self.name, self.container = source, display_name(source), container
        self.sampler, self.transform = sampler, transform
        self.live, self.retries, self.retry_delay_s = live, retries, retry_delay_s
        self.stable_s, self.timeout_s = stable_s, timeout_s
        self.queue: queue.Queue = queue.Queue(queue_size)
        self.stop = threading.Event()
        self.index = 0           # frames decoded so far, over all connections
        self.last_time: float | None = None
        self.thread = threading.Thread(target=self.run, name="mlic-video", daemon=True)

    def put(self, item) -> bool:
        """Queue `item`, waiting while the queue is full; False when asked to stop meanwhile."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self.read_all()
        except BaseException as e:  # noqa: BLE001 -- reaches the consumer, re-raised there
            self.put(_Failure(e))
        finally:
            if self.container is not None:
                self.container.close()
                self.container = None
            self.put(_End())

    def read_all(self) -> None:
        """Read connection after connection: one for a file, reopened after drops when live."""
        failures = 0   # reconnects in a row without a stable connection
        while True:
            opened_at = time.monotonic()
            problem = self.read_connection(self.container)
            self.container.close()
            self.container = None
            if self.stop.is_set():
                return
            if not self.live:
                if problem is not None:
                    self.put(FrameError(None, self.last_time, f"{self.name}: cannot read further ({problem})",
                                        fatal=True))
                return
            if time.monotonic() - opened_at >= self.stable_s:
                failures = 0
            what = f"stream dropped ({problem or 'end of stream'})"
            while self.container is None:
                failures += 1
                if failures > self.retries:
                    self.put(FrameError(None, self.last_time, f"{self.name}: {what}; "
                                        f"gave up after {self.retries} reconnects", fatal=True))
                    return
                if not self.put(FrameError(None, self.last_time, f"{self.name}: {what}; "
                                           f"reconnecting (attempt {failures}/{self.retries})")):
                    return
                if self.stop.wait(self.retry_delay_s):
                    return
                try:
                    self.container = open_video(self.source, live=True, timeout_s=self.timeout_s)
                except DatasetError as e:
                    what = f"reconnect failed ({str(e).removeprefix(self.name + ': ')})"

    def read_connection(self, container) -> str | None:
        """Demux and decode one opened container until EOF or stop. Returns None at EOF, or a
        one-line reason when reading failed (network error, broken container)."""
        AV = av()
        stream = container.streams.video[0]
        try:
            stream.thread_type = "AUTO"   # frame + slice threads; much faster for H.264/HEVC
        except (AttributeError, ValueError, AV.error.FFmpegError):
            pass
        rate = float(stream.average_rate or stream.guessed_rate or FALLBACK_RATE)
        offset = 0.0 if self.last_time is None else self.last_time + 1.0 / rate
        clock = _Clock(stream, rate, offset)
        try:
            for packet in container.demux(stream):
                if self.stop.is_set():
                    return None
                try:
                    frames = packet.decode()
                except AV.error.FFmpegError as e:
                    at = clock.packet_time(packet)
                    where = f"packet at {at:.3f} s" if at is not None else "a packet"
                    if not self.put(FrameError(None, at, f"{self.name}: {where}: cannot decode ({_one_line(e)})")):
                        return None
                    continue
                for frame in frames:
                    if not self.emit(frame, clock.frame_time(frame)):
                        return None
        except (AV.error.FFmpegError, OSError) as e:
            return _one_line(e)
        return None

    def emit(self, frame, time_s: float) -> bool:
        """Number the decoded frame; queue it (RGB + payload) when sampled. False when stopping."""
        index = self.index
        self.index += 1
        self.last_time = time_s
        if not self.sampler.keep(index, time_s):
            return True
        try:
            image = frame.to_ndarray(format="rgb24")                 # (H, W, 3) uint8
        except Exception as e:  # noqa: BLE001 -- one bad frame must not end the video
            return self.put(FrameError(index, time_s, f"{self.name}: frame {index}: cannot convert to RGB "
                                                      f"({_one_line(e)})"))
        payload = None
        if self.transform is not None:
            try:
                payload = self.transform(image)
            except Exception as e:  # noqa: BLE001 -- the caller's code; reported per frame
                return self.put(FrameError(index, time_s, f"{self.name}: frame {index}: transform failed "
                                                          f"({type(e).__name__}: {_one_line(e)})"))
        return self.put(Frame(index, time_s, image, payload))


class _Clock:
    """Seconds from the start of one connection's stream, shifted by `offset` (reconnects)."""

    def __init__(self, stream, rate: float, offset: float):
        self.time_base = stream.time_base
        self.origin = stream.start_time   # pts of the stream start; first frame's pts when unknown
        self.rate, self.offset = rate, offset
        self.count = 0                    # frames of this connection

    def frame_time(self, frame) -> float:
        self.count += 1
        time_base = frame.time_base or self.time_base
        if frame.pts is None or time_base is None:
            return self.offset + (self.count - 1) / self.rate
        if self.origin is None:
            self.origin = frame.pts
        return self.offset + float((frame.pts - self.origin) * time_base)

    def packet_time(self, packet) -> float | None:
        if packet.pts is None or packet.time_base is None:
            return None
        return self.offset + float((packet.pts - (self.origin or 0)) * packet.time_base)


class FrameStream(Iterator):
    """Iterator over Frames and FrameErrors of one source (what `iter_frames` returns).

    Stop early with `close()`, a `with` block, `break` or simply dropping it: the decode thread
    sees the stop event within ~0.1 s and closes the container. (Dropping it only works when the
    transform does not itself refer to the stream; `close()` always does.)"""

    def __init__(self, decoder: _Decoder):
        self._decoder = decoder
        self._done = False
        self._finalizer = weakref.finalize(self, decoder.stop.set)
        decoder.thread.start()

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> Frame | FrameError:
        if self._done:
            raise StopIteration
        try:
            item = self._get()
        except BaseException:   # KeyboardInterrupt while waiting: stop decoding, then propagate
            self.close(wait_s=0.0)
            raise
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def _get(self):
        decoder = self._decoder
        while True:
            try:
                return decoder.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not decoder.thread.is_alive():   # it always queues _End last; never hang anyway
                    try:
                        return decoder.queue.get_nowait()
                    except queue.Empty:
                        return _End()

    def ready(self) -> bool:
        """Whether the next item is already decoded (next() will not wait): a consumer batching
        frames runs what it has when nothing more is ready, so live tags are never held back."""
        return not self._decoder.queue.empty()

    def close(self, wait_s: float = 1.0) -> None:
        """Stop the decode thread and wait up to `wait_s` for it to close the container."""
        self._done = True
        self._finalizer()
        if wait_s > 0 and self._decoder.thread is not threading.current_thread():
            self._decoder.thread.join(wait_s)

    def __enter__(self) -> FrameStream:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_frames(source: str | os.PathLike, *, every: int | None = None, fps: float | None = None,
                transform: Callable[[np.ndarray], Any] | None = None,
                queue_size: int = 8, retries: int = 5, retry_delay_s: float = 1.0,
                live: bool | None = None, stable_s: float = 60.0, timeout_s: float = 10.0,
                ) -> FrameStream:
    """Frames of a video file, URL or camera, decoded ahead in a daemon thread.

    every=N keeps frames whose index % N == 0; fps=F keeps the first frame at or after each 1/F s
    of video time (all frames when F exceeds the stream's rate); neither keeps every frame.
    `transform(image)` runs in the decode thread on kept frames; its result is `Frame.payload`.
    A frame that cannot be decoded or transformed is yielded as a FrameError and decoding goes
    on. Live sources (`live=None`: URLs and cameras, see is_live_source, unless the container
    states a duration) are reopened when they drop, up to `retries` times in a row,
    `retry_delay_s` apart, each drop yielded as a non-fatal FrameError; then a fatal FrameError
    ends the iteration. A connection that lasted `stable_s` seconds resets the count, so a
    camera that blips once a day is never given up. `timeout_s` bounds network waits.

    The source is opened here: DatasetError (one line) when it is missing, unreadable or has no
    video stream; ConfigError for invalid options.
    """
    if every is not None and fps is not None:
        raise ConfigError("give either every (frames) or fps (frames per second), not both")
    if every is not None and (isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1):
        raise ConfigError(f"every must be a whole number >= 1, got {every!r}")
    if fps is not None and not (isinstance(fps, numbers.Real) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a number > 0, got {fps!r}")
    if queue_size < 1:
        raise ConfigError(f"queue_size must be >= 1, got {queue_size}")
    if retries < 0 or retry_delay_s < 0:
        raise ConfigError(f"retries and retry_delay_s must be >= 0, got {retries} and {retry_delay_s}")
    text = os.fspath(source)
    container = open_video(text, live=live, timeout_s=timeout_s)
    if live is None:   # a URL of a finite clip ends at its end instead of being replayed
        live = is_live_source(text) and container.duration is None
    decoder = _Decoder(text, container, sampler=_Sampler(every, fps), transform=transform,
                       queue_size=queue_size, live=live, retries=retries, retry_delay_s=retry_delay_s,
                       stable_s=stable_s, timeout_s=timeout_s)
    return FrameStream(decoder)


def _one_line(error: BaseException) -> str:
    """The error as one line; for FFmpeg errors just its text ("Invalid data found when processing
    input"), without the errno and the file name the message already starts with."""
    text = getattr(error, "strerror", None)
    return one_line(Exception(text) if text else error)


def write_slideshow(images: list[np.ndarray], path: str | os.PathLike, *, seconds_per_image: float = 2.0,
                    fps: int = 10, crf: int = 12, lossless: bool = False) -> list[float]:
    """Encode HWC uint8 RGB images as a video (H.264 in .mp4/.mkv/.mov, VP9 in .webm), each shown
    for `seconds_per_image`: a demo clip with known scene changes. Images are resized to the
    first one's size (even sides, as yuv420p needs). `lossless`: H.264 at qp 0 in yuv444p (no
    chroma subsampling; what remains is the RGB <-> YUV rounding), for checks that compare a
    frame's tags with its image's. Returns the scene start times in seconds."""
    from ..core.preprocess import pil

    PIL = pil()
    lib = av()
    path = Path(path)
    if not images:
        raise ConfigError("write_slideshow needs at least one image")
    first = np.asarray(images[0])
    width, height = first.shape[1] // 2 * 2, first.shape[0] // 2 * 2
    repeat = max(1, round(seconds_per_image * fps))
    codec = "libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264"
    starts = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with lib.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if lossless else "yuv420p"
        stream.options = {"qp": "0"} if lossless and codec == "libx264" else {"crf": str(crf)}
        for number, image in enumerate(images):
            starts.append(number * repeat / fps)
            picture = PIL.Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").resize((width, height))
            frame = lib.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
            for _ in range(repeat):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return starts
