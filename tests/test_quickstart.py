"""The quickstart's library path end to end, on a tiny budget: the same seven steps the README's
first command runs (train, eval, export x5, parity, infer, bench, engines), with a tiny model and
a few training steps. What it checks is that every step runs and writes its outputs; the full
quickstart's accuracy is measured by running it (README)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tiny_model import one_thread

pytest.importorskip("modelopt.onnx")

TINY = {"model.backbone": "test_resnet", "model.pretrained": "none", "model.image_size": 64,
        "model.d_model": 32, "model.nhead": 4, "model.dim_feedforward": 64, "train.epochs": 1,
        "train.max_steps_per_epoch": 4, "train.batch_size": 16}


def test_quickstart_library_path_on_a_tiny_budget(tmp_path, monkeypatch):
    from mlic_edge.cli import quickstart

    monkeypatch.setattr(quickstart, "CALIB_IMAGES", 32)
    monkeypatch.setattr(quickstart, "SAMPLE_IMAGES", 4)
    with one_thread():
        result = quickstart.run_quickstart(tmp_path, overrides=TINY)
    assert result["checkpoint"].endswith("best.pt") and 0 <= result["mAP"] <= 100
    names = {p.name for p in tmp_path.iterdir()}
    assert {"eval.json", "per_class_ap.png", "parity.json", "predictions.csv", "samples.txt",
            "bench_fp32.json", "bench_int8_cpu.json", "model_fp32.onnx", "model_fp16.onnx",
            "model_int8.onnx", "model_int8_cpu.onnx"} <= names
    rows = json.loads((tmp_path / "parity.json").read_text())
    assert [r["precision"] for r in rows][:4] == ["fp32", "fp16", "int8", "int8-cpu"]
    assert rows[0]["passed"]                                    # fp32 graph == PyTorch
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 4
    assert {"clip.mp4", "clip_frames.csv", "clip_segments.csv"} <= names
    run_readme_api_example(tmp_path)
    try:
        import tensorrt_rtx  # noqa: F401  (the dev extra installs it: engines are built here too)
    except ImportError:
        return
    assert {"model_fp32.engine", "model_fp16.engine", "model_int8.engine"} <= names


def run_readme_api_example(quickstart_out: Path) -> None:
    """The README's Python example, as written, on this quickstart's outputs."""
    import contextlib
    import io

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- api-example -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert "runs/quickstart/" in code
    code = code.replace("runs/quickstart/", f"{quickstart_out}/")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert "cannot decode image" in lines[3] or "not found" in lines[3]       # missing.jpg: its own error
    assert all("top score" in line for line in lines[:3])
    assert [line for line in lines if line.startswith("frame ")][:2] == \
        [line for line in lines if line.startswith("frame 0 at 0.0 s")] + \
        [line for line in lines if line.startswith("frame 5 at 0.5 s")]
