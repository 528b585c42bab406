"""The whole path through the Python API alone: train a few steps, export fp32 and fp16, check
parity, and read delta mAP from the result object, as a user's script would (its own process,
nothing but `import mlic_edge`)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from tiny_model import make_folder_dataset

SCRIPT = textwrap.dedent('''
    import json, sys
    import mlic_edge

    root, out = sys.argv[1], sys.argv[2]
    run = mlic_edge.train(data="folder", data_root=root, out=f"{out}/run", epochs=1, batch_size=8,
                          backbone="test_resnet", pretrained="none", image_size=64, device="cpu",
                          show_progress=False,
                          set_items=["model.d_model=32", "model.nhead=4", "model.dim_feedforward=64",
                                     "data.workers=0"])
    fp32 = mlic_edge.export(run.best_checkpoint, f"{out}/model.onnx")
    fp16 = mlic_edge.export(run.best_checkpoint, f"{out}/model.fp16.onnx", precision="fp16")
    report = mlic_edge.parity(run.best_checkpoint, [fp32.path, fp16.path], data="folder", data_root=root)
    rows = [{"precision": r.precision, "delta_map": r.delta_map, "passed": r.passed} for r in report.rows]
    print(json.dumps({"mAP": run.metrics["mAP"], "rows": rows, "passed": report.passed}))
''')


def test_train_export_parity_through_the_api(tmp_path):
    root = make_folder_dataset(tmp_path / "data")
    script = tmp_path / "whole_path.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row["precision"] for row in result["rows"]] == ["fp32", "fp16"]
    fp32, fp16 = result["rows"]
    assert fp32["delta_map"] == pytest.approx(0.0, abs=0.01) and fp32["passed"]
    assert abs(fp16["delta_map"]) <= 0.1 and fp16["passed"] == result["passed"] is True
    assert (tmp_path / "out" / "run" / "best.pt").is_file()
