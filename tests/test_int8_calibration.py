"""INT8 calibration that streams, and the layer-wise error finder, on the trained tiny model.

* The calibration set is written to its cache one image at a time and read back one batch at a
  time (`CalibrationSet`). Activation statistics are reduced batch by batch (`activation_ranges`):
  the histogram bins are aligned to powers of two and large tensors are sampled at fixed
  positions of each image, so any batching must give exactly the one-shot ranges, and so must a
  graph whose shapes ONNX Runtime has to find out itself.
* The entropy threshold clips a far outlier and keeps a flat distribution whole; the vectorised
  search finds the least-KL clip point of the bin-by-bin definition; the sampled histogram of a
  large tensor gives the full histogram's threshold to within 8%.
* The Q/DQ graphs have the layout their target needs (symmetric inputs-only for TensorRT).
* `compare_layers` must point at a layer that was deliberately perturbed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tiny_model import one_thread, preprocess_spec



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


def test_streamed_ranges_equal_the_one_shot_ranges(trained, tmp_path, monkeypatch):
    """Steps of 1, 3 and 8 images and one step of all 64 give the same statistics, bit for bit
    (the histogram's sample positions are per image, so batching cannot change them). The tiny
    model's tensors are smaller than the default sample: a 256-element one makes it sample."""
    import onnx

    from mlic_edge.export import activation_ranges as ar
    from mlic_edge.export.calibration import calibration_from_folder
    from mlic_edge.export.precision import calibrated_tensors, int8_nodes

    calibration = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 64, cache_dir=tmp_path)
    model = onnx.load(str(trained["fp32"]))
    tensors = calibrated_tensors(model, int8_nodes(model), "tensorrt")
    assert len(tensors) >= 10
    monkeypatch.setattr(ar, "SAMPLE_PER_IMAGE", 256)
    with one_thread():
        runs = {step: ar.collect_stats(trained["fp32"], tensors, calibration, method="entropy", calib_batch=step)
                for step in (64, 1, 3, 8)}
    one_shot = runs.pop(64)
    assert one_shot.images == 64
    assert any(stats.count > 64 * ar.SAMPLE_PER_IMAGE for stats in one_shot.tensors.values())  # some sampled
    for step, stats in runs.items():
        assert stats.images == 64
        for name in tensors:
            a, b = stats.tensors[name], one_shot.tensors[name]
            assert (a.minimum, a.maximum, a.hist_range, a.count) == (b.minimum, b.maximum, b.hist_range, b.count), name
            np.testing.assert_array_equal(a.histogram, b.histogram, err_msg=f"{name}, step {step}")
        assert stats.ranges(symmetric=True) == one_shot.ranges(symmetric=True)
    # The same graph without shape information: ONNX Runtime allocates those outputs itself (and
    # optimises the graph a little differently: activations agree to float rounding)
    unknown = onnx.load(str(trained["fp32"]))
    del unknown.graph.value_info[:]
    onnx.save(unknown, str(tmp_path / "no_shapes.onnx"))
    with one_thread():
        no_shapes = ar.collect_stats(tmp_path / "no_shapes.onnx", tensors, calibration, method="entropy", calib_batch=3)
    assert [no_shapes.tensors[n].count for n in tensors] == [one_shot.tensors[n].count for n in tensors]
    np.testing.assert_allclose([no_shapes.ranges(symmetric=True)[n] for n in tensors],
                               [one_shot.ranges(symmetric=True)[n] for n in tensors], rtol=1e-3)
    ranges = one_shot.ranges(symmetric=True)
    amax = {name: one_shot.tensors[name].amax for name in tensors}
    assert all(0 < high <= amax[name] and low == -high for name, (low, high) in ranges.items())
    assert any(high < amax[name] for name, (_, high) in ranges.items())   # entropy clips somewhere


def test_entropy_threshold_clips_outliers_and_keeps_flat_data():
    from mlic_edge.export.activation_ranges import NUM_BINS, TensorStats, entropy_threshold

    rng = np.random.default_rng(0)
    with_outlier = TensorStats()
    with_outlier.observe(np.concatenate([rng.standard_normal(60_000), [40.0]]).astype(np.float32)[None])
    low, high = with_outlier.range("entropy", symmetric=True)
    assert high == -low and 2.5 < high < 10                       # the bulk kept, the outlier clipped
    flat = TensorStats()
    flat.observe(rng.uniform(-3, 3, 60_000).astype(np.float32)[None])
    assert flat.range("entropy", symmetric=True)[1] > 0.97 * flat.amax
    assert flat.range("max", symmetric=True)[1] == flat.amax
    relu = TensorStats()
    relu.observe(np.maximum(rng.standard_normal(60_000), 0).astype(np.float32)[None])
    low, high = relu.range("entropy", symmetric=False)              # CPU: asymmetric, min kept
    assert low == 0.0 and 0 < high <= relu.amax
    assert entropy_threshold(np.zeros(NUM_BINS)) == NUM_BINS
    assert entropy_threshold(np.r_[np.ones(10), np.zeros(NUM_BINS - 10)]) == 10


def _kl_loop(histogram: np.ndarray, stop: int, levels: int = 128) -> float:
    """KL(P || Q) of one clip point, spelled out bin by bin (TensorRT's entropy calibration)."""
    h = np.array(histogram, dtype=np.float64)
    h[0] = h[1]
    p = h[:stop].copy()
    p[-1] += h[stop:].sum()
    edges = (np.arange(levels + 1) * stop) // levels
    q = np.zeros(stop)
    for a, b in zip(edges[:-1], edges[1:]):
        filled = h[a:b] > 0
        if filled.any():
            q[a:b][filled] = h[a:b].sum() / filled.sum()
    if q.sum() == 0:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    q[support & (q == 0)] = 1e-4 * p[support].min()
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


@pytest.mark.parametrize("seed", range(6))
def test_entropy_threshold_is_the_least_kl_clip_point(seed):
    """The vectorised search picks the clip point whose KL, recomputed bin by bin, is the least
    over every candidate (equal to 1e-9: ties may fall either way), on histograms with a zero
    spike, gaps, an empty last candidate bin and a far outlier."""
    from mlic_edge.export.activation_ranges import NUM_BINS, entropy_threshold

    rng = np.random.default_rng(seed)
    values = np.abs(rng.laplace(0, 1, 200_000) if seed % 2 else rng.standard_normal(200_000))
    values = np.concatenate([np.zeros(50_000), values, [40.0 + seed]])
    histogram = np.bincount(np.minimum((values * NUM_BINS / 64).astype(int), NUM_BINS - 1), minlength=NUM_BINS)
    if seed >= 4:
        histogram[300:310] = 0                                   # gaps inside the bulk
    last = int(np.flatnonzero(histogram)[-1]) + 1
    stride = -(-last // 2048)
    candidates = [*range(128, last, stride), last]
    kl = {stop: _kl_loop(histogram, stop) for stop in candidates}
    chosen = entropy_threshold(histogram)
    assert chosen in kl and kl[chosen] <= min(kl.values()) + 1e-9
    assert chosen < last                                          # the outlier is clipped


@pytest.mark.parametrize("tail", ["normal", "laplace"])
def test_sampled_histogram_gives_the_full_threshold(tail):
    """A tensor larger than SAMPLE_PER_IMAGE is histogrammed from a uniform sample. The entropy
    threshold of the full data itself moves by about 5% from one calibration set to the next
    (measured: ReLU'd normal 4.36-4.98, Laplace 10.2-11.5 over 6 seeds), so the sampled
    thresholds, averaged over 4 sets, must stay within 8% of the full ones, and the range exact."""
    from mlic_edge.export import activation_ranges as ar

    sampled_thresholds, full_thresholds = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        draw = rng.standard_normal if tail == "normal" else (lambda n: rng.laplace(0, 1, n))
        sampled, full = ar.TensorStats(), ar.TensorStats()
        for _ in range(6):
            image = np.maximum(draw(4 * ar.SAMPLE_PER_IMAGE), 0).astype(np.float32)[None]
            sampled.observe(image, ar.sample_positions(image.size, seed))
            full.observe(image)                                       # every element
        assert sampled.histogram.sum() == 6 * ar.SAMPLE_PER_IMAGE and full.histogram.sum() == full.count
        assert sampled.amax == full.amax
        sampled_thresholds.append(sampled.range("entropy", True)[1])
        full_thresholds.append(full.range("entropy", True)[1])
        assert full_thresholds[-1] < full.amax
    assert abs(np.mean(sampled_thresholds) - np.mean(full_thresholds)) <= 0.08 * np.mean(full_thresholds), \
        (sampled_thresholds, full_thresholds)


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_int8_graph_layout(trained, tmp_path, target):
    """TensorRT: symmetric INT8 (zero points 0) on the inputs of the quantized ops only, FP32 bias;
    CPU: UINT8 activations, outputs quantized too. Neither touches the stem, the head, LayerNorm or
    Softmax, and an activation's scale is its calibrated range over the INT8 span."""
    import onnx
    from onnx import numpy_helper

    from mlic_edge.export.calibration import calibration_from_folder
    from mlic_edge.export.precision import _head_nodes, sensitive_convs, to_int8

    calibration = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 32, cache_dir=tmp_path)
    fp32 = onnx.load(str(trained["fp32"]))
    with one_thread():
        model = to_int8(Path(trained["fp32"]), calibration, target, batch=None, method="max")
    onnx.checker.check_model(model)                      # valid ONNX: nodes in topological order
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in init}
    assert quantized == expected_int8_inputs(fp32, target)
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in init:
            zero_point = init[node.input[2]]
            assert zero_point.dtype == (np.int8 if target == "tensorrt" else np.uint8)
            if target == "tensorrt":
                assert zero_point == 0
    untouched = set(_head_nodes(fp32)) | set(sensitive_convs(fp32))
    untouched |= {n.name for n in fp32.graph.node if n.op_type in ("LayerNormalization", "Softmax", "Sigmoid")}
    for node in model.graph.node:
        if node.name in untouched:
            producers = [p for p in model.graph.node if set(p.output) & set(node.input)]
            assert all(p.op_type != "DequantizeLinear" for p in producers), node.name
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) >= 10
    biases = [init[n.input[2]] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in init]
    if target == "tensorrt":
        assert biases and all(b.dtype == np.float32 for b in biases)


def expected_int8_inputs(fp32, target: str) -> set[str]:
    """The activations that get a Q/DQ pair, from the fp32 graph by the placement rule written out
    here (not by precision.calibrated_tensors, the code under test): the data input of every Conv
    and Gemm and the activation inputs of every MatMul with a 2-D weight (a Linear), except the
    stem/head convs and the per-class head kept in float; for the CPU target their outputs too.
    Activation x activation MatMuls (q @ k^T, attn @ v, the iRPE tables) get none."""
    from mlic_edge.export.precision import _head_nodes, sensitive_convs

    weights = {i.name: len(i.dims) for i in fp32.graph.initializer}
    kept_float = set(_head_nodes(fp32)) | set(sensitive_convs(fp32))
    assert kept_float, "the rule keeps the stem/head in float: something must be excluded"
    expected: set[str] = set()
    linear = 0
    for node in fp32.graph.node:
        if node.name in kept_float:
            continue
        if node.op_type in ("Conv", "Gemm"):
            activations = [node.input[0]]
        elif node.op_type == "MatMul" and any(weights.get(i) == 2 for i in node.input):
            activations = [i for i in node.input if i not in weights]
            linear += 1
        else:
            continue
        expected.update(activations)
        if target == "cpu":
            expected.update(node.output)
    assert linear >= 4, "the Transformer's Linear layers are MatMuls with 2-D weights"
    return expected


def test_int8_with_fp16_high_precision_runs_on_ort(trained, tmp_path):
    """--int8-high-precision fp16: the ops left out of INT8 run in FP16 (AutoCast on the Q/DQ
    graph), LayerNorm/Softmax stay FP32, I/O stays FP32, and ONNX Runtime runs it."""
    import onnx

    from mlic_edge.export.calibration import calibration_from_folder
    from mlic_edge.export.onnx_export import ort_session
    from mlic_edge.export.precision import ort_workarounds, to_int8

    calibration = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 16, cache_dir=tmp_path)
    with one_thread():
        model = to_int8(Path(trained["fp32"]), calibration, "tensorrt", batch=None, method="max",
                        high_precision="fp16")
        assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        session = ort_session(model, disabled_optimizers=ort_workarounds(model))
        logits = session.run(None, {"images": np.asarray(calibration)[:4]})[0]
    assert logits.shape == (4, 6) and np.isfinite(logits).all()


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
    """One step's requested activations are what calibration holds: the step is capped by their size."""
    import onnx

    from mlic_edge.export import activation_ranges as ar
    from mlic_edge.export.precision import calibrated_tensors, int8_nodes

    model = onnx.load(str(trained["fp32"]), load_external_data=False)
    per_image = ar.tensor_bytes_per_image(model, calibrated_tensors(model, int8_nodes(model), "tensorrt"))
    assert 10_000 < per_image < 50 * 2 ** 20                     # tiny model: KBs to MBs per image
    assert ar.calibration_step(per_image) == ar.MAX_STEP
    assert ar.calibration_step(per_image, requested=3) == 3
    monkeypatch.setattr(ar, "STEP_BYTES", per_image * 2.5)
    assert ar.calibration_step(per_image) == 2
    monkeypatch.setattr(ar, "STEP_BYTES", per_image // 10)
    assert ar.calibration_step(per_image) == 1
