"""Accuracy parity of exported graphs (fp32 / fp16 / int8 for TensorRT / int8 for CPU) on the
trained fixture of tests/test_export.py (synthetic coloured-squares task, labelled folder dataset).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tiny_model import one_thread

from mlic_edge.core.capabilities import parity_limits  # noqa: E402
from mlic_edge.parity import ParityReport, compare_logits, run_parity  # noqa: E402

pytest.importorskip("onnx_graphsurgeon")
MODELS = ("fp32", "fp16", "int8", "int8_cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def parity_report(trained) -> ParityReport:
    return run_parity(trained["ckpt"], [trained[m] for m in MODELS], data="folder",
                      data_root=trained["data_root"], split="test")


@pytest.fixture(scope="module")
def parity_rows(parity_report) -> list[dict]:
    return parity_report.to_dicts()


def test_parity_rows_and_thresholds(parity_rows):
    assert [Path(r["model"]).name for r in parity_rows] == ["fp32.onnx", "fp16.onnx", "int8_trt.onnx", "int8_cpu.onnx"]
    expected_keys = {"model", "precision", "mAP", "delta_mAP", "CF1", "OF1", "max_abs_logit_err",
                     "mean_abs_logit_err", "top1_agreement", "passed"}
    for row in parity_rows:
        assert expected_keys <= set(row)
        assert row["images"] == 128 and row["targets"] == "labels" and row["same_checkpoint"]
        # the fixture model learned the task: mAP is meaningful
        assert row["reference_mAP"] > 80
        print(f"{Path(row['model']).name}: mAP {row['mAP']:.2f} delta {row['delta_mAP']:+.3f} "
              f"max|dlogit| {row['max_abs_logit_err']:.2e} top1 {row['top1_agreement']:.3f}")
    fp32, fp16, int8, int8_cpu = parity_rows
    assert [r["precision"] for r in parity_rows] == ["fp32", "fp16", "int8", "int8-cpu"]
    limits = parity_limits()
    assert fp32["max_abs_logit_err"] < 1e-3 and abs(fp32["delta_mAP"]) <= limits["fp32"]
    assert abs(fp16["delta_mAP"]) <= limits["fp16"]
    assert abs(int8["delta_mAP"]) <= limits["int8"]
    assert abs(int8_cpu["delta_mAP"]) <= limits["int8"]
    assert all(r["passed"] for r in parity_rows)
    assert fp32["top1_agreement"] == 1.0 and fp16["top1_agreement"] >= 0.95


def test_parity_fails_beyond_threshold():
    rng = np.random.default_rng(0)
    targets = (rng.random((64, 4)) < 0.3).astype(np.float32)
    reference = np.where(targets > 0, 2.0, -2.0) + rng.normal(0, 1, targets.shape)
    noisy = reference + rng.normal(0, 3, targets.shape)
    same = compare_logits(reference, reference.copy(), targets, "fp32")
    assert same.passed and same.delta_map == 0 and same.max_abs_logit_error == 0
    bad = compare_logits(reference, noisy, targets, "int8-cpu")
    assert bad.delta_map < -1 and not bad.passed and bad.max_delta_map == parity_limits()["int8"]
    nan = compare_logits(reference, reference * np.nan, targets, "fp16")
    assert not nan.passed
    assert not ParityReport([same, bad]).passed and ParityReport([same]).passed


def test_report_rows_carry_what_the_json_holds(parity_report, parity_rows):
    """The Python rows and the CLI's JSON rows are one thing: same values under the JSON's keys."""
    assert len(parity_report) == len(MODELS) and parity_report.passed
    for row, as_json in zip(parity_report, parity_rows):
        assert as_json["delta_mAP"] == row.delta_map and as_json["mAP"] == row.map
        assert as_json["max_abs_logit_err"] == row.max_abs_logit_error and as_json["passed"] is row.passed
        assert as_json["precision"] == row.precision and as_json["model"] == row.model
    assert list(parity_rows[0]) == [
        "model", "precision", "mAP", "reference_mAP", "delta_mAP", "max_delta_mAP", "CF1", "OF1",
        "max_abs_logit_err", "mean_abs_logit_err", "top1_agreement", "passed", "images", "targets",
        "source", "same_checkpoint", "seconds", "reference_seconds"]


def test_parity_cli_image_folder_and_json(trained, tmp_path, capsys):
    """Unlabelled folder: the reference's decisions are the targets; exit 0 when all pass."""
    from mlic_edge.cli import main

    out = tmp_path / "parity.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["parity", "--images", str(Path(trained["data_root"]) / "test"), "--max-images", "48",
              "--reference", str(trained["ckpt"]), str(trained["fp32"]), str(trained["fp16"]),
              "--json", str(out)])
    output = capsys.readouterr().out
    assert exit_info.value.code == 0, output
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and all(r["targets"] == "reference" and r["images"] == 48 for r in rows)
    assert rows[0]["reference_mAP"] == pytest.approx(100.0)
    assert "fp16" in output and "pass" in output
    report = run_parity(trained["ckpt"], [trained["fp32"], trained["fp16"]],
                        image_dir=Path(trained["data_root"]) / "test", max_images=48)
    assert [row.delta_map for row in report] == [row["delta_mAP"] for row in rows]
    assert [row.passed for row in report] == [row["passed"] for row in rows] and report.passed


def test_parity_cli_exit_1_on_failure(trained, capsys):
    from mlic_edge.cli import main

    with pytest.raises(SystemExit) as exit_info:  # an impossible threshold makes int8 fail
        main(["parity", "--data", "folder", "--data-root", str(trained["data_root"]), "--max-images", "32",
              "--reference", str(trained["ckpt"]), str(trained["int8_cpu"]), "--max-delta", "int8=-1"])
    assert exit_info.value.code == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_model_with_other_preprocessing_is_refused(trained, tmp_path):
    """The same images must reach the reference and the model: a graph whose normalisation
    differs from the checkpoint's is one ModelFileError, before any image is run."""
    import onnx

    from mlic_edge.core.errors import ModelFileError
    from mlic_edge.core.onnx_metadata import read_metadata, set_metadata

    model = onnx.load(str(trained["fp32"]))
    meta = read_metadata(trained["fp32"])
    meta.preprocess = {**meta.preprocess, "mean": [0.5, 0.5, 0.5]}
    set_metadata(model, meta)
    other = tmp_path / "other_mean.onnx"
    onnx.save(model, str(other))
    with pytest.raises(ModelFileError, match="other_mean.onnx: preprocessing .* differs from the reference"):
        run_parity(trained["ckpt"], [other], data="folder", data_root=trained["data_root"], split="test")
