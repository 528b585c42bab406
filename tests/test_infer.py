"""`mlic-edge infer`: folders with broken files, list files, output formats, attention maps, exit
codes, and the ONNX path with torch made unimportable (an edge device)."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_model import ANIMALS as CLASSES
from tiny_model import SIZE, run_cli, save_tiny_checkpoint
from torchless import TORCH_BLOCKER

REPO = Path(__file__).resolve().parents[1]
GOOD = ["good0.jpg", "good1.png", "good2.jpg", "one.png"]  # one.png is 1x1: a valid image
BAD = ["trunc.jpg", "text.jpg"]



def cli_without_torch(*args: str) -> subprocess.CompletedProcess:
    code = TORCH_BLOCKER + textwrap.dedent(f"""
        from mlic_edge.cli import main
        try:
            main({list(args)!r})
        finally:
            assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules), 'torch was imported'
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def onnx_model(checkpoint) -> Path:
    """The checkpoint exported (fp32, with the attention output) by `mlic_edge.export`."""
    from mlic_edge.export import MissingDependencyError, export_onnx

    out = checkpoint.with_name("tiny.onnx")
    try:
        export_onnx(checkpoint, out, with_attention=True)
    except MissingDependencyError as e:  # export extra not installed: the runtime is still testable
        pytest.skip(f"export dependencies missing: {e}")
    return out


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, size in zip(GOOD[:3], [(48, 80), (64, 64), (120, 90)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "one.png")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (folder / "trunc.jpg").write_bytes(buffer.getvalue()[:300])          # truncated JPEG
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")  # renamed text file
    (folder / "notes.md").write_text("ignored: not an image suffix\n")
    return folder


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_infer_folder_with_broken_files_without_torch(tmp_path, onnx_model, image_dir):
    out, maps = tmp_path / "preds.csv", tmp_path / "maps"
    result = cli_without_torch("infer", str(image_dir), "--model", str(onnx_model), "--out", str(out),
                               "--threshold", "0", "--batch-size", "3", "--save-attention", str(maps), "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out)
    assert [Path(r["path"]).name for r in rows] == sorted(GOOD + BAD)  # input order, every file
    header = list(rows[0])
    assert header == ["path", "labels", "error", *[f"score_{c}" for c in CLASSES]]
    by_name = {Path(r["path"]).name: r for r in rows}
    for name in GOOD:
        row = by_name[name]
        assert row["error"] == "" and row["labels"] == ";".join(CLASSES)  # threshold 0: every label
        assert all(0.0 <= float(row[f"score_{c}"]) <= 1.0 for c in CLASSES)
    for name in BAD:
        assert "cannot decode image" in by_name[name]["error"] and by_name[name]["labels"] == ""
        assert name in result.stderr
    assert "4/6 images labelled, 2 skipped" in result.stderr
    drawn = sorted(p.name for p in maps.iterdir())
    assert drawn == sorted(f"{Path(n).stem}__{c}.png" for n in GOOD for c in CLASSES)
    with Image.open(maps / "good2__dog.png") as overlay:
        assert overlay.size == (90, 120)  # drawn over the image at its own size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_infer_matches_the_checkpoint_and_uses_per_class_thresholds(tmp_path, checkpoint, onnx_model, image_dir):
    from mlic_edge.runtime.infer import run_inference

    onnx_out, pt_out = tmp_path / "onnx.jsonl", tmp_path / "pt.jsonl"
    for model, out in ((onnx_model, onnx_out), (checkpoint, pt_out)):
        summary = run_inference(image_dir, model, out, batch_size=2, device="cpu", progress=False)
        assert (summary.processed, summary.failed, summary.total) == (4, 2, 6)
    onnx_rows = [json.loads(line) for line in onnx_out.read_text().splitlines()]
    pt_rows = [json.loads(line) for line in pt_out.read_text().splitlines()]
    assert [r["path"] for r in onnx_rows] == [r["path"] for r in pt_rows]
    thresholds = dict(zip(CLASSES, [0.5, 0.4, 0.6]))
    for a, b in zip(onnx_rows, pt_rows):
        if a["error"]:
            assert b["error"] and not a["scores"] and not a["labels"]
            continue
        assert a["error"] is None and list(a["scores"]) == CLASSES
        for c in CLASSES:
            assert a["scores"][c] == pytest.approx(b["scores"][c], abs=1e-4)
        assert a["labels"] == [c for c in CLASSES if a["scores"][c] >= thresholds[c]]


def test_infer_list_file_stdout_jsonl_and_missing_entries(tmp_path, onnx_model, image_dir):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\n{image_dir / 'good0.jpg'}\n\nmissing.jpg\n{image_dir / 'one.png'}\n")
    result = cli_without_torch("infer", str(listing), "--model", str(onnx_model), "--threshold", "0.5",
                               "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["path"]).name for r in rows] == ["good0.jpg", "missing.jpg", "one.png"]
    assert rows[1]["error"] and "not found" in rows[1]["error"]
    assert str(tmp_path / "missing.jpg") in rows[1]["path"]  # relative to the list's folder
    for row in (rows[0], rows[2]):
        assert row["labels"] == [c for c, s in row["scores"].items() if s >= 0.5]


def test_infer_exit_codes(tmp_path, onnx_model, image_dir):
    bad_only = tmp_path / "bad"
    bad_only.mkdir()
    for name in BAD:
        (bad_only / name).write_bytes((image_dir / name).read_bytes())
    out = tmp_path / "bad.csv"
    result = run_cli("infer", str(bad_only), "--model", str(onnx_model), "--out", str(out), "--no-progress")
    assert result.returncode == 1                               # nothing could be processed
    assert len(read_csv(out)) == 2 and "no image could be processed" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("infer", str(empty), "--model", str(onnx_model))
    assert result.returncode == 2 and "no images" in result.stderr
    result = run_cli("infer", str(image_dir), "--model", str(onnx_model), "--out", str(tmp_path / "x.txt"))
    assert result.returncode == 2 and ".csv or .jsonl" in result.stderr
    help_text = run_cli("infer", "--help")
    assert help_text.returncode == 0, help_text.stderr            # the whole help renders
    assert "Exit code" in help_text.stdout and "[/name]" in help_text.stdout


def _device_command(command: str, model: Path, image_dir: Path, device: str) -> list[str]:
    if command == "infer":
        return ["infer", str(image_dir), "--model", str(model), "--no-progress", "--device", device]
    return ["bench", "--model", str(model), "--no-baseline", "--warmup", "0", "--repeats", "1", "--device", device]


@pytest.mark.parametrize("command", ["infer", "bench"])
@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_malformed_device_is_one_line(onnx_model, image_dir, command, device):
    result = run_cli(*_device_command(command, onnx_model, image_dir, device))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --device {device!r}: unknown device; expected auto, cpu, cuda, cuda:N or tensorrt"]


@pytest.mark.parametrize("command", ["infer", "bench"])
def test_cuda_device_without_a_gpu_is_one_line(onnx_model, image_dir, command):
    """onnxruntime-gpu lists its CUDA provider on machines without a GPU and logs its own
    multi-line error when the session tries it; only the project's line may reach stderr."""
    from mlic_edge.core.gpu import cuda_device_count
    if cuda_device_count():
        pytest.skip("a GPU is visible")
    result = run_cli(*_device_command(command, onnx_model, image_dir, "cuda:0"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {onnx_model}: device cuda:0: ")
    assert "no CUDA GPU is visible" in lines[0] or "CUDAExecutionProvider cannot run here" in lines[0]


def test_renamed_batch_flags_keep_their_old_spelling(onnx_model, image_dir):
    image = str(image_dir / "good0.jpg")
    result = run_cli("infer", image, "--model", str(onnx_model), "--no-progress", "--device", "cpu", "--batch", "2")
    assert result.returncode == 0, result.stderr
    assert "--batch is deprecated" in result.stderr and "use --batch-size" in result.stderr
    result = run_cli("infer", image, "--model", str(onnx_model), "--batch", "2", "--batch-size", "3")
    assert result.returncode == 2 and "disagree" in result.stderr
    result = run_cli("bench", "--model", str(onnx_model), "--no-baseline", "--warmup", "0", "--repeats", "1",
                 "--device", "cpu", "--batch", "1,2")
    assert result.returncode == 0, result.stderr
    assert "use --batch-sizes" in result.stderr
    help_text = run_cli("infer", "--help")
    assert help_text.returncode == 0 and "--batch-size" in help_text.stdout
    assert "--batch " not in help_text.stdout.replace("--batch-size", "")


def test_infer_recursive(tmp_path, onnx_model, image_dir):
    nested = tmp_path / "root" / "sub"
    nested.mkdir(parents=True)
    (nested / "deep.png").write_bytes((image_dir / "good1.png").read_bytes())
    from mlic_edge.core.errors import DatasetError
    from mlic_edge.core.images import list_inputs
    with pytest.raises(DatasetError, match="--recursive"):
        list_inputs(tmp_path / "root")
    assert [p.name for p in list_inputs(tmp_path / "root", recursive=True)] == ["deep.png"]


def test_save_attention_needs_the_attention_output(tmp_path, onnx_model, image_dir):
    import onnx

    from mlic_edge.core.onnx_metadata import read_metadata, set_metadata

    proto = onnx.load(str(onnx_model))  # the same export with its attention output dropped
    kept = [o for o in proto.graph.output if o.name != "attention"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    meta = read_metadata(onnx_model)
    meta.output_names = ["logits"]
    set_metadata(proto, meta)
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    result = cli_without_torch("infer", str(image_dir / "good0.jpg"), "--model", str(plain),
                               "--save-attention", str(tmp_path / "maps"))
    assert result.returncode == 2
    assert "no 'attention' output" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------- jobs that survive a crash
@pytest.fixture(scope="module")
def long_list(tmp_path_factory, trained) -> Path:
    """A list of 3,000 entries over the tiny model's test images, a few of them broken: long
    enough to be killed half way."""
    folder = tmp_path_factory.mktemp("job")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    pictures = sorted((trained["data_root"] / "test").glob("*.png"))[:40]
    lines = [str(pictures[i % len(pictures)]) if i % 97 else "broken.png" for i in range(3000)]
    listing = folder / "list.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def _infer_job(listing: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlic_edge", "infer", str(listing), "--model", str(model), "--out", str(out),
            "--batch-size", "4", "--workers", "1", "--no-progress", "--device", "cpu", *extra]


def _rows_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1 if path.exists() else 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_killed_job_resumes_to_the_uninterrupted_file(tmp_path, trained, long_list, suffix):
    import signal
    import time

    reference, out = tmp_path / f"reference{suffix}", tmp_path / f"preds{suffix}"
    subprocess.run(_infer_job(long_list, trained["fp32"], reference), check=True, capture_output=True, timeout=300)
    partial = out.with_name(out.name + ".partial")
    job = subprocess.Popen(_infer_job(long_list, trained["fp32"], out), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _rows_in(partial) < 600 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)                                     # no chance to clean up
    job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL and not out.exists()
    kept = _rows_in(partial)
    assert 600 <= kept < 3000, kept                                     # killed half way
    with open(partial, "ab") as f:
        f.write(b"/a/torn/row,with,no,end")                            # as if cut mid-write
    again = subprocess.run(_infer_job(long_list, trained["fp32"], out), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--resume" in again.stderr and again.stderr.count("\n") == 1
    resumed = subprocess.run(_infer_job(long_list, trained["fp32"], out, "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "kept from the interrupted run" in resumed.stderr
    assert out.read_bytes() == reference.read_bytes()                  # same rows, same order, same bytes
    assert not partial.exists() and not out.with_name(out.name + ".partial.json").exists()


def test_resume_refuses_another_job(tmp_path, trained, long_list):
    out = tmp_path / "preds.csv"
    partial = out.with_name("preds.csv.partial")
    job = subprocess.Popen(_infer_job(long_list, trained["fp32"], out), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    import time
    while _rows_in(partial) < 40 and job.poll() is None:
        time.sleep(0.005)
    job.kill()
    job.wait(timeout=30)
    other = subprocess.run(_infer_job(long_list, trained["fp32"], out, "--resume", "--threshold", "0.3"),
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2 and "differs in threshold" in other.stderr
    assert partial.exists()                                              # nothing lost


def test_ctrl_c_keeps_the_rows_for_resume(tmp_path, trained, long_list):
    import signal
    import time

    out = tmp_path / "preds.csv"
    partial = out.with_name("preds.csv.partial")
    # a test run started in the background (`cmd &` without job control) inherits SIGINT ignored,
    # and so would the job: give it the default disposition, as a terminal's Ctrl-C finds it
    job = subprocess.Popen(_infer_job(long_list, trained["fp32"], out), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while _rows_in(partial) < 100 and job.poll() is None:
        time.sleep(0.005)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert _rows_in(partial) >= 100 and not out.exists()


# ----------------------------------------------------------------------------------- video
def test_infer_video_every_5_frames_with_segments(tmp_path, trained):
    """A real H.264 clip of four of the tiny model's test images (2 s each): each sampled frame
    gets its image's tags, the segments are what the documented smoothing and hysteresis make of
    the frames' scores, and each segment starts within one sampled frame (0.5 s) of a scene
    change where its label appears. (Where it ends depends on how low the score falls against
    the class's off threshold.)"""
    from mlic_edge.runtime.segments import read_segments
    from mlic_edge.runtime.video import write_slideshow
    from mlic_edge.runtime.tagger import Tagger

    names = ["0000.png", "0002.png", "0005.png", "0010.png"]
    pictures = [np.asarray(Image.open(trained["data_root"] / "test" / n).convert("RGB")) for n in names]
    clip = tmp_path / "clip.mp4"
    starts = write_slideshow(pictures, clip, seconds_per_image=2.0, fps=10, lossless=True)
    assert starts == [0.0, 2.0, 4.0, 6.0]
    with Tagger(trained["fp32"], device="cpu") as tagger:
        scene_labels = [p.labels for p in tagger.predict(pictures)]
        thresholds = dict(zip(tagger.classes, tagger.thresholds))
    assert len({tuple(labels) for labels in scene_labels}) == 4          # four different scenes
    frames, segments = tmp_path / "frames.csv", tmp_path / "segments.csv"
    result = cli_without_torch("infer", str(clip), "--model", str(trained["fp32"]), "--every", "5",
                               "--out", str(frames), "--segments", str(segments), "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = read_csv(frames)
    assert list(rows[0])[:5] == ["path", "frame", "time_s", "labels", "error"]
    assert [int(r["frame"]) for r in rows] == list(range(0, 80, 5))
    assert [float(r["time_s"]) for r in rows] == pytest.approx([f / 10 for f in range(0, 80, 5)])
    for row in rows:
        assert row["path"] == str(clip)
        assert row["labels"] == ";".join(scene_labels[int(float(row["time_s"]) // 2)])

    classes = [c[len("score_"):] for c in list(rows[0]) if c.startswith("score_")]
    times = [float(r["time_s"]) for r in rows]
    scores = {label: [float(r[f"score_{label}"]) for r in rows] for label in classes}
    found = sorted((s.label, s.start_s, s.end_s) for s in read_segments(segments))
    assert found == sorted(documented_segments(times, scores, thresholds)), found
    for label, start, _ in found:        # a segment starts within one sampled frame of its scene
        assert any(label in scene_labels[k] and 0 <= start - 2.0 * k <= 0.5 for k in range(4)), (label, start)


def documented_segments(times, scores, thresholds, alpha=0.5, hysteresis=0.1):
    """(label, start, end) by the rule runtime/segments.py documents, written out independently:
    EMA-smoothed scores, on at >= the class threshold, off below max(on - hysteresis, on / 2), a
    segment from its first to its last frame that is on."""
    found = []
    for label, xs in scores.items():
        on, off = thresholds[label], max(thresholds[label] - hysteresis, thresholds[label] / 2)
        smoothed, start, last = None, None, None
        for t, x in zip(times, xs):
            smoothed = x if smoothed is None else alpha * x + (1 - alpha) * smoothed
            if start is not None and smoothed < off:
                found.append((label, start, last))
                start = None
            if start is None and smoothed >= on:
                start = t
            if start is not None:
                last = t
        if start is not None:
            found.append((label, start, last))
    return found


def test_infer_video_errors_are_one_line(tmp_path, trained):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    result = cli_without_torch("infer", str(text), "--model", str(trained["fp32"]), "--no-progress")
    assert result.returncode == 2 and "notes.mp4" in result.stderr and "Traceback" not in result.stderr
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    result = cli_without_torch("infer", str(folder), "--model", str(trained["fp32"]), "--every", "5")
    assert result.returncode == 2 and "--every is for video" in result.stderr
