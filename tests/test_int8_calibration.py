"""INT8 calibration that streams, and the layer-wise error finder, on the trained tiny model.

* The calibration set is written to its cache one image at a time and read back one batch at a
  time (`CalibrationSet`); Model Optimizer gets a data reader instead of one array. With the same
  batch size the activation scales must equal those of the one-shot path (the whole array handed
  to Model Optimizer, as before), and with another batch size stay close (histograms merged).
* `compare_layers` must point at a layer that was deliberately perturbed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tiny_model import one_thread, preprocess_spec

pytest.importorskip("modelopt.onnx")


def activation_scales(model) -> dict[str, float]:
    """{quantized activation: scale} of a Q/DQ graph (weights, which are initializers, left out)."""
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {node.input[0]: float(init[node.input[1]]) for node in model.graph.node
            if node.op_type == "QuantizeLinear" and node.input[0] not in init and init[node.input[1]].size == 1}


def test_calibration_set_streams_to_disk_and_reads_batches(trained, tmp_path):
    from mlic_edge.export.calibration import CalibrationSet, calibration_from_folder

    streamed = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 40, cache_dir=tmp_path)
    assert isinstance(streamed, CalibrationSet) and streamed.path.suffix == ".npy" and streamed.shape == (40, 3, 64, 64)
    in_memory = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 40, cache_dir=None)
    np.testing.assert_array_equal(np.asarray(streamed), np.asarray(in_memory))   # same pixels, same order
    np.testing.assert_array_equal(np.load(streamed.path), np.asarray(in_memory))  # a plain .npy
    batches = list(streamed.batches(16))
    assert [len(b) for b in batches] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate(batches), np.asarray(in_memory))
    streamed.path.write_bytes(streamed.path.read_bytes()[:-100])                  # truncated: rebuilt
    again = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 40, cache_dir=tmp_path)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(in_memory))


def test_streamed_calibration_gives_the_one_shot_scales(trained, tmp_path):
    """Same images, batch 8: the streamed reader must give exactly the scales of the old one-shot
    path (the whole array as calibration_data), so streaming changes nothing. Batch 2 quantizes
    the same tensors; its entropy scales differ (measured: median 14%, worst 40% on this model),
    because ORT's histogram collector re-bins its histogram whenever a later step widens the
    range, so entropy thresholds depend on the step size (max calibration does not)."""
    import onnx

    from mlic_edge.export.calibration import calibration_from_folder
    from mlic_edge.export.precision import (FP16_EXCLUDE, INT8_EXCLUDE, _head_nodes, _import_modelopt,
                                            _modelopt_quiet, _restore_ort_quantization, sensitive_convs,
                                            to_int8_tensorrt)

    calibration = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 64, cache_dir=tmp_path)
    fp32 = Path(trained["fp32"])
    with one_thread():
        streamed = {step: to_int8_tensorrt(fp32, calibration, batch=None, work_dir=tmp_path, calib_batch=step)
                    for step in (8, 2)}
        _, quantization = _import_modelopt("test")
        with _modelopt_quiet(), _restore_ort_quantization():   # the one-shot path (the previous code)
            quantization.quantize(
                str(fp32), quantize_mode="int8", calibration_data={"images": np.asarray(calibration)},
                calibration_method="entropy", calibration_shapes="images:8x3x64x64", calibration_eps=["cpu"],
                op_types_to_exclude=list(INT8_EXCLUDE), op_types_to_exclude_fp16=list(FP16_EXCLUDE),
                nodes_to_exclude=_head_nodes(onnx.load(str(fp32))) + sensitive_convs(onnx.load(str(fp32))),
                high_precision_dtype="fp32",
                output_path=str(tmp_path / "one_shot.onnx"), log_level="ERROR")
    one_shot = activation_scales(onnx.load(str(tmp_path / "one_shot.onnx")))
    assert len(one_shot) >= 10
    assert activation_scales(streamed[8]) == one_shot
    by_two = activation_scales(streamed[2])
    assert by_two.keys() == one_shot.keys()
    assert 0 < min(by_two.values()) and all(np.isfinite(list(by_two.values())))


def test_layerwise_finds_a_perturbed_layer(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    from mlic_edge.layerwise import compare_layers, format_report
    from mlic_edge.export.calibration import calibration_from_folder

    model = onnx.load(str(trained["fp32"]))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    victim = convs[len(convs) // 2]                           # a conv in the middle of the backbone
    weights = next(i for i in model.graph.initializer if i.name == victim.input[1])
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.3, weights.name))
    perturbed = tmp_path / "perturbed.onnx"
    onnx.save(model, str(perturbed))
    images = np.asarray(calibration_from_folder(trained["calib_dir"], preprocess_spec(), 8, cache_dir=None))
    report = compare_layers(trained["fp32"], perturbed, images)
    assert report["first_jump"]["tensor"] == victim.output[0], format_report(report)
    before = [r for r in report["tensors"] if r["index"] < report["first_jump"]["index"]]
    assert before and max(r["rel_mean"] for r in before) < 1e-5    # identical up to the victim
    same = compare_layers(trained["fp32"], trained["fp32"], images)
    assert same["first_jump"] is None and max(r["rel_mean"] for r in same["tensors"]) == 0


def test_parity_layers_cli_writes_the_ranking(trained, tmp_path):
    from mlic_edge.cli import main

    out = tmp_path / "parity.json"
    with pytest.raises(SystemExit) as done:
        main(["parity", str(trained["int8"]), "--reference", str(trained["ckpt"]), "--images",
              str(trained["calib_dir"]), "--max-images", "16", "--json", str(out), "--layers",
              "--layers-fp32", str(trained["fp32"]), "--layers-images", "4"])
    assert done.value.code in (0, None)
    reports = json.loads((tmp_path / "parity.layers.json").read_text())
    assert len(reports) == 1 and reports[0]["compared"] > 20 and reports[0]["images"] == 4
    ranked = [reports[0]["tensors"][i]["rel_mean"] for i in reports[0]["ranked"]]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0


def test_calibration_step_shrinks_with_the_activations(trained, monkeypatch):
    """One step's activations are what the calibrators hold: the step is capped by their size."""
    from mlic_edge.export import precision

    fp32 = Path(trained["fp32"])
    per_image = precision.activation_bytes_per_image(fp32)
    assert 10_000 < per_image < 50 * 2 ** 20                     # tiny model: KBs to MBs per image
    assert precision.calibration_step(fp32) == precision.CALIB_BATCH
    assert precision.calibration_step(fp32, requested=3) == 3
    monkeypatch.setattr(precision, "CALIB_STEP_BYTES", per_image * 2.5)
    assert precision.calibration_step(fp32) == 2
    monkeypatch.setattr(precision, "CALIB_STEP_BYTES", per_image // 10)
    assert precision.calibration_step(fp32) == 1
