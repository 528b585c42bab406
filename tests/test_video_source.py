"""Frames from video files (mlic_edge.runtime.video): a real H.264 clip is encoded here with PyAV,
3 scenes of 10 solid-colour frames at 10 fps, and read back."""
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from torchless import blocker

from mlic_edge.core.errors import ConfigError, DatasetError
from mlic_edge.runtime.video import (
    Frame,
    FrameError,
    display_name,
    is_live_source,
    is_video_source,
    iter_frames,
    video_info,
)

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]   # scene 0, 1, 2 (RGB)
RATE, PER_SCENE, SIZE = 10, 10, 64
N = PER_SCENE * len(COLOURS)


def encode(path, frames: int = N, container_options: dict | None = None, texture: bool = False) -> None:
    """H.264 (yuv420p, crf 10) clip of `frames` frames; frame i shows COLOURS[i // PER_SCENE % 3],
    with `texture` plus noise (so that frame data, not headers, fills most of the file)."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            image = np.empty((SIZE, SIZE, 3), np.uint8)
            image[:] = COLOURS[i // PER_SCENE % len(COLOURS)]
            if texture:
                image[:] = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("video")
    clips = {"mp4": folder / "clip.mp4", "mkv": folder / "clip.mkv"}
    for path in clips.values():
        encode(path)
    return clips


def frames_of(stream) -> list:
    return [item for item in stream if isinstance(item, Frame)]


def video_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlic-video"]


def wait_for_no_video_threads(timeout_s: float = 3.0) -> list[threading.Thread]:
    deadline = time.monotonic() + timeout_s
    while video_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return video_threads()


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_all_frames_with_times_and_colours(clips, kind):
    items = list(iter_frames(clips[kind]))
    assert all(isinstance(item, Frame) for item in items)
    assert [f.index for f in items] == list(range(N))
    assert [f.time_s for f in items] == pytest.approx([i / RATE for i in range(N)], abs=1e-6)
    for frame in items:
        assert frame.image.shape == (SIZE, SIZE, 3) and frame.image.dtype == np.uint8
        assert frame.payload is None
    for scene, colour in enumerate(COLOURS):
        image = items[scene * PER_SCENE + 5].image.astype(int)
        assert np.abs(image - colour).max() <= 6, (scene, image[0, 0])   # YUV 4:2:0 round trip


def test_every_keeps_every_nth_index(clips):
    frames = frames_of(iter_frames(clips["mp4"], every=3))
    assert [f.index for f in frames] == list(range(0, N, 3))
    assert [f.time_s for f in frames] == pytest.approx([i / RATE for i in range(0, N, 3)], abs=1e-6)


def test_fps_keeps_one_frame_per_slot(clips):
    # 5 fps from 10 fps: slots every 0.2 s, each filled by the frame at exactly that time
    frames = frames_of(iter_frames(clips["mkv"], fps=5))
    assert [f.index for f in frames] == list(range(0, N, 2))
    # 3 fps: slots 0, .333, .667, 1.0, ...: the first frame at or after each (0.0, 0.4, 0.7, 1.0, ...)
    frames = frames_of(iter_frames(clips["mp4"], fps=3))
    assert [f.index for f in frames] == [0, 4, 7, 10, 14, 17, 20, 24, 27]
    # faster than the stream: every frame once
    assert len(frames_of(iter_frames(clips["mp4"], fps=50))) == N


def test_fps_equal_to_the_stream_rate_keeps_every_frame(tmp_path):
    # at 100 fps the frame at 0.29 s gives 0.29 * 100 = 28.999999999999996 in floating point:
    # it must still fill slot 29
    path = tmp_path / "fast.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=100)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(40):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert [f.index for f in frames_of(iter_frames(path, fps=100))] == list(range(40))


def test_transform_runs_and_its_payload_arrives(clips):
    def mean_colour(image: np.ndarray) -> tuple[np.ndarray, str]:
        return image.reshape(-1, 3).mean(axis=0), threading.current_thread().name

    frames = frames_of(iter_frames(clips["mp4"], every=10, transform=mean_colour))
    assert [f.index for f in frames] == [0, 10, 20]
    for frame, colour in zip(frames, COLOURS):
        mean, thread = frame.payload
        assert np.abs(mean - colour).max() <= 6
        assert thread == "mlic-video"   # ran in the decode thread


def test_failing_transform_gives_frame_errors_and_goes_on(clips):
    def fail_on_scene_two(image: np.ndarray) -> int:
        if image[0, 0, 1] > 150:   # green scene
            raise RuntimeError("boom")
        return 1

    items = list(iter_frames(clips["mp4"], transform=fail_on_scene_two))
    errors = [item for item in items if isinstance(item, FrameError)]
    assert [e.index for e in errors] == list(range(PER_SCENE, 2 * PER_SCENE))
    assert not any(e.fatal for e in errors)
    assert "clip.mp4: frame 10: transform failed (RuntimeError: boom)" in errors[0].message
    assert [f.index for f in frames_of(items)] == [*range(PER_SCENE), *range(2 * PER_SCENE, N)]


def test_early_break_stops_the_decode_thread(clips):
    for frame in iter_frames(clips["mp4"], queue_size=2):
        assert frame.index == 0
        break
    gc.collect()
    assert wait_for_no_video_threads() == []


def test_close_and_with_block_stop_the_decode_thread(clips):
    stream = iter_frames(clips["mp4"], queue_size=1)
    next(stream)
    stream.close()
    assert wait_for_no_video_threads() == []
    with pytest.raises(StopIteration):
        next(stream)
    with iter_frames(clips["mkv"], queue_size=1) as stream:
        next(stream)
    assert wait_for_no_video_threads() == []


def test_decode_thread_is_a_daemon(clips):
    stream = iter_frames(clips["mp4"], queue_size=1)
    assert [t.daemon for t in video_threads()] == [True]
    stream.close()
    assert wait_for_no_video_threads() == []


def test_video_info(clips):
    info = video_info(clips["mp4"])
    assert info["frames"] == N and info["fps"] == RATE and info["duration_s"] == pytest.approx(3.0)
    assert (info["width"], info["height"], info["codec"]) == (SIZE, SIZE, "h264")
    assert video_info(clips["mkv"])["duration_s"] == pytest.approx(3.0)


def test_missing_and_non_video_files_give_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nope.mp4: no such video file"):
        iter_frames(tmp_path / "nope.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("these are notes, not a video\n" * 20)
    with pytest.raises(DatasetError, match="notes.mp4: cannot open video"):
        iter_frames(text)
    with pytest.raises(DatasetError, match="notes.mp4"):
        video_info(text)


def test_file_without_video_stream_gives_dataset_error(tmp_path):
    path = tmp_path / "tone.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(DatasetError, match="tone.mkv: no video stream"):
        iter_frames(path)


def test_invalid_sampling_options_give_config_error(clips):
    before = len(video_threads())
    for options in ({"every": 2, "fps": 5.0}, {"every": 0}, {"every": 1.5}, {"fps": 0}, {"fps": -1.0},
                    {"queue_size": 0}, {"retries": -1}):
        with pytest.raises(ConfigError):
            iter_frames(clips["mp4"], **options)
    assert len(video_threads()) == before   # options are checked before anything starts


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_corrupted_middle_yields_what_it_can(tmp_path, kind):
    broken = tmp_path / f"broken.{kind}"
    encode(broken, texture=True)
    data = bytearray(broken.read_bytes())
    start, stop = int(len(data) * 0.4), int(len(data) * 0.6)   # frame data, past the headers
    data[start:stop] = np.random.default_rng(0).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    broken.write_bytes(bytes(data))
    items = list(iter_frames(broken))   # never raises
    assert all(isinstance(item, (Frame, FrameError)) for item in items)
    frames = frames_of(items)
    assert 0 < len(frames) < N
    assert [f.index for f in frames] == list(range(len(frames)))
    errors = [item for item in items if isinstance(item, FrameError)]
    if kind == "mp4":   # the mp4 index still lists the damaged packets: the decoder rejects them
        assert errors
    for error in errors:
        assert not error.fatal
        assert error.message.startswith(f"{broken}: packet at ") and "cannot decode (" in error.message


def test_truncated_file_yields_fewer_frames(tmp_path):
    # mkv and "faststart" mp4 keep their index in front, so half a file still opens
    for name, options in (("cut.mkv", None), ("cut.mp4", {"movflags": "+faststart"})):
        whole = tmp_path / f"whole-{name}"
        encode(whole, frames=3 * N, container_options=options, texture=True)
        cut = tmp_path / name
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        items = list(iter_frames(cut))
        frames = frames_of(items)
        assert 0 < len(frames) < 3 * N, name
        assert [f.index for f in frames] == list(range(len(frames)))


def test_live_source_reconnects_then_gives_up(clips):
    # a short file read as if it were a camera: each EOF is a drop, each reopening yields the clip again
    items = list(iter_frames(clips["mp4"], live=True, retries=2, retry_delay_s=0, every=10))
    errors = [item for item in items if isinstance(item, FrameError)]
    assert [e.fatal for e in errors] == [False, False, True]
    assert errors[0].message.endswith("clip.mp4: stream dropped (end of stream); reconnecting (attempt 1/2)")
    assert errors[1].message.endswith("reconnecting (attempt 2/2)")
    assert errors[2].message.endswith("gave up after 2 reconnects")
    assert items[-1] is errors[2]
    frames = frames_of(items)
    # indices keep counting across the 3 connections; times continue after the last frame (2.9 s + 0.1 s)
    assert [f.index for f in frames] == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert [f.time_s for f in frames] == pytest.approx([0, 1, 2, 3, 4, 5, 6, 7, 8], abs=1e-6)
    positions = [items.index(e) for e in errors]
    assert positions == [3, 7, 11]   # 3 frames from each connection before each drop


def test_live_source_whose_reopening_fails(clips, tmp_path):
    path = tmp_path / "camera.mkv"
    path.write_bytes(clips["mkv"].read_bytes())
    stream = iter_frames(path, live=True, retries=3, retry_delay_s=0, every=10)   # opened here
    path.unlink()   # the open container still reads it; reopening fails
    items = list(stream)
    assert len(frames_of(items)) == 3
    messages = [item.message for item in items if isinstance(item, FrameError)]
    assert len(messages) == 4
    assert "stream dropped (end of stream); reconnecting (attempt 1/3)" in messages[0]
    assert "reconnect failed (no such video file); reconnecting (attempt 2/3)" in messages[1]
    assert "reconnecting (attempt 3/3)" in messages[2]
    assert "reconnect failed (no such video file); gave up after 3 reconnects" in messages[3]
    assert items[-1].fatal


def test_url_of_a_finite_clip_is_read_once(clips, monkeypatch):
    from mlic_edge.runtime import video

    # As if clip.mkv were https://host/clip.mkv: a live scheme, but the container states a duration,
    # so its end is the end (not a drop to reconnect after) ...
    monkeypatch.setattr(video, "is_live_source", lambda source: True)
    items = list(iter_frames(clips["mkv"], retries=3, retry_delay_s=0, every=15))
    assert [(type(i).__name__, i.index) for i in items] == [("Frame", 0), ("Frame", 15)]
    # ... unless the caller says it is live
    items = list(iter_frames(clips["mkv"], live=True, retries=1, retry_delay_s=0, every=15))
    assert [(type(i).__name__, i.index) for i in items] == [
        ("Frame", 0), ("Frame", 15), ("FrameError", None), ("Frame", 30), ("Frame", 45), ("FrameError", None)]
    assert items[-1].fatal


def test_keyboard_interrupt_in_the_consumer_stops_the_thread(clips):
    with pytest.raises(KeyboardInterrupt):
        for frame in iter_frames(clips["mp4"], queue_size=1):
            raise KeyboardInterrupt
    gc.collect()
    assert wait_for_no_video_threads() == []


def test_stop_while_waiting_for_reconnect(clips):
    stream = iter_frames(clips["mp4"], live=True, retries=5, retry_delay_s=30, every=100)
    assert isinstance(next(stream), Frame)
    assert isinstance(next(stream), FrameError)   # the thread now waits 30 s before reopening
    started = time.monotonic()
    stream.close()
    assert wait_for_no_video_threads() == []
    assert time.monotonic() - started < 5


def test_thread_exceptions_reach_the_consumer(clips, monkeypatch):
    from mlic_edge.runtime import video

    def broken(self, index, time_s):
        raise ZeroDivisionError("sampler bug")

    monkeypatch.setattr(video._Sampler, "keep", broken)
    with pytest.raises(ZeroDivisionError, match="sampler bug"):
        list(iter_frames(clips["mp4"]))
    assert wait_for_no_video_threads() == []


def test_is_video_source_and_is_live_source():
    for source in ("clip.mp4", "a/b/CLIP.MKV", "x.webm", "x.ts", "rtsp://cam/1", "RTSP://cam/1",
                   "https://host/live.m3u8", "udp://0.0.0.0:1234", "/dev/video0", "/dev/video12"):
        assert is_video_source(source), source
    for source in ("photo.jpg", "list.txt", "clips/", "/dev/videos", "/dev/video", "ftp://host/a.jpg"):
        assert not is_video_source(source), source
    assert is_video_source(os.path.join("some", "clip.mov"))
    assert is_live_source("rtsp://user:pw@cam/1") and is_live_source("/dev/video2")
    assert not is_live_source("clip.mp4") and not is_live_source("/data/clip.ts")


def test_messages_hide_url_passwords():
    assert display_name("rtsp://admin:s3cret@cam:554/stream1") == "rtsp://admin:***@cam:554/stream1"
    assert display_name("rtsp://cam:554/stream1") == "rtsp://cam:554/stream1"
    assert display_name("clip.mp4") == "clip.mp4"


def test_without_pyav_a_one_line_backend_error(clips):
    # core.video and core.segments import with numpy alone; reading a video then names what is missing
    code = blocker("av", "torch") + textwrap.dedent(f"""
        import sys
        import mlic_edge.runtime.video as video, mlic_edge.runtime.segments
        from mlic_edge.core.errors import BackendUnavailable
        assert "av" not in sys.modules and "torch" not in sys.modules
        assert video.is_video_source("clip.mp4")
        try:
            video.iter_frames({str(clips["mp4"])!r})
        except BackendUnavailable as e:
            print("ERROR", e)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ERROR reading video needs PyAV: pip install av"
