"""ONNX export: graph validity, PyTorch parity, TensorRT op support, metadata, fp16/int8, CLI errors.

Tiny models only (timm test_resnet, d_model 32, 64 px). The trained model (`trained`, conftest.py)
is built once per session and shared with the parity, plugin, engine and calibration tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mlic_edge.checkpoint import load_model
from mlic_edge.core.files import file_sha256
from mlic_edge.config import ModelConfig
from mlic_edge.export import check_trt_ops, export_onnx, load_trt_ops
from mlic_edge.export.onnx_export import max_relative_error, ort_session
from mlic_edge.model import num_buckets
from mlic_edge.core.onnx_metadata import read_metadata

from tiny_model import one_thread, preprocess_spec, save_random_checkpoint, tiny_config  # noqa: E402

pytest.importorskip("onnx_graphsurgeon")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


# ----------------------------------------------------------------------------------- fp32 graphs
def _torch_logits(ckpt: Path, x: np.ndarray) -> np.ndarray:
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _ort_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs from a plain ONNX Runtime CPU session, made here (not the exporter's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _assert_matches_torch(path: Path, ckpt: Path, x: np.ndarray) -> list[np.ndarray]:
    """The exported graph's logits against the checkpoint's PyTorch logits on the same inputs."""
    outputs = _ort_outputs(path, x)
    reference = _torch_logits(ckpt, x)
    np.testing.assert_allclose(outputs[0], reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    return outputs


def _assert_trt_clean(model: onnx.ModelProto) -> None:
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node), "custom-domain node in graph"
    assert not model.functions
    assert {n.op_type for n in model.graph.node} <= load_trt_ops()
    assert check_trt_ops(model) == []


@pytest.mark.parametrize("encoder,decoder_self_attn,batch,attention", [
    ("irpe", "none", None, False),       # the paper's model, dynamic batch
    ("standard", "all", 2, True),        # static batch + attention output
    ("none", "second", None, False),
])
def test_export_fp32_matches_torch(tmp_path, encoder, decoder_self_attn, batch, attention):
    cfg = tiny_config(encoder=encoder, decoder_self_attn=decoder_self_attn)
    ckpt = save_random_checkpoint(tmp_path / "m.pt", cfg)
    result = export_onnx(ckpt, tmp_path / "m.onnx", batch=batch, with_attention=attention)
    assert result.exporter == "dynamo" and result.fp32_max_rel_error <= 1e-4

    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    _assert_trt_clean(model)
    assert [o.name for o in model.graph.output] == (["logits", "attention"] if attention else ["logits"])
    images = model.graph.input[0]
    assert images.name == "images" and images.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_value or d.dim_param for d in images.type.tensor_type.shape.dim]
    assert dims[1:] == [3, 64, 64] and (dims[0] == batch if batch else isinstance(dims[0], str))

    rng = np.random.default_rng(1)
    for b in ((1, 5) if batch is None else (batch,)):
        x = rng.standard_normal((b, 3, 64, 64)).astype(np.float32)
        outputs = _assert_matches_torch(result.path, ckpt, x)
        assert outputs[0].shape == (b, cfg.num_classes)
        if attention:
            assert outputs[1].shape == (b, cfg.num_classes, 2, 2)
            np.testing.assert_allclose(outputs[1].sum(axis=(2, 3)), 1.0, atol=1e-5)

    if batch is not None:  # parity's backend pads the last chunk for a static-batch graph
        from mlic_edge.parity import _predict_logits
        x = rng.standard_normal((5, 3, 64, 64)).astype(np.float32)
        assert max_relative_error(_predict_logits(result.path, [x]), _torch_logits(ckpt, x)) <= 1e-4

    if encoder == "irpe":  # bucket ids and one-hot are folded constants; nothing recomputes them
        inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
        assert (4, 4, num_buckets(cfg.irpe_ratio)) in inits.values()
        assert (4, 4) in inits.values()
        forbidden = {"Range", "Log", "Sign", "Abs", "Round", "OneHot", "Equal", "Where", "Floor", "Ceil"}
        assert not forbidden & {n.op_type for n in model.graph.node}


def test_torchscript_fallback_path_matches(tmp_path):
    ckpt = save_random_checkpoint(tmp_path / "m.pt", tiny_config())
    result = export_onnx(ckpt, tmp_path / "m.onnx", exporter="torchscript")
    assert result.exporter == "torchscript" and result.fp32_max_rel_error <= 1e-4
    _assert_trt_clean(onnx.load(str(result.path)))
    for b in (1, 3):     # its own error report aside: ONNX Runtime run here against PyTorch
        _assert_matches_torch(result.path, ckpt, np.random.default_rng(b).standard_normal((b, 3, 64, 64), np.float32))


def test_metadata_round_trip_without_torch(tmp_path):
    cfg = tiny_config()
    ckpt = save_random_checkpoint(tmp_path / "m.pt", cfg)
    out = export_onnx(ckpt, tmp_path / "m.onnx", with_attention=True).path
    meta = read_metadata(out)
    assert meta.classes == [f"c{k}" for k in range(5)]
    assert meta.preprocess == preprocess_spec()
    assert meta.thresholds == [0.5] * 5
    assert ModelConfig.from_dict(meta.model_config) == cfg
    assert meta.precision == "fp32" and meta.source_sha256 == file_sha256(ckpt)
    assert meta.input_name == "images" and meta.output_names == ["logits", "attention"]
    assert meta.extra["opset"] == 19 and meta.extra["batch"] == "dynamic"
    code = ("import sys; from mlic_edge.core.onnx_metadata import read_metadata; "
            f"m = read_metadata({str(out)!r}); assert 'torch' not in sys.modules; print(m.precision)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fp32"


def test_trt_op_check_flags_what_tensorrt_rejects():
    from onnx import helper, TensorProto

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln", "mean", "inv"], name="ln"),
        helper.make_node("QuantizeLinear", ["ln", "s", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"], name="dq"),
        helper.make_node("Unique", ["dq"], ["u"], name="unique"),
        helper.make_node("MyPlugin", ["dq"], ["y"], name="plugin", domain="custom"),
    ]
    inits = [helper.make_tensor("g", TensorProto.FLOAT, [4], [1.0] * 4),
             helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4),
             helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("zp", TensorProto.INT8, [], [3])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("custom", 1)])
    problems = " | ".join(check_trt_ops(model))
    for expected in ("opset 21", "LayerNormalization 'ln'", "non-zero zero point", "Unique x1", "custom::MyPlugin x1"):
        assert expected in problems


def test_read_metadata_errors_are_one_line(tmp_path):
    from onnx import helper, TensorProto

    from mlic_edge.core.errors import ModelFileError

    plain = tmp_path / "plain.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])), plain)
    with pytest.raises(ModelFileError, match="no mlic-edge metadata"):
        read_metadata(plain)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff not protobuf")
    with pytest.raises(ModelFileError, match="garbage.onnx"):
        read_metadata(garbage)


# ----------------------------------------------------------------------------------- fp16 / int8
@pytest.mark.parametrize("name,precision,trt", [
    ("fp16", "fp16", True), ("int8", "int8", True), ("int8_cpu", "int8-cpu", False)])
def test_reduced_precision_graphs_run_on_ort(trained, name, precision, trt):
    path = trained[name]
    meta = read_metadata(path)
    assert meta.precision == precision
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    if trt:
        _assert_trt_clean(model)
    if name == "fp16":
        assert onnx.TensorProto.FLOAT16 in {i.data_type for i in model.graph.initializer}
        # LayerNorm / Softmax stay FP32: their inputs are cast back (or never cast down)
    if name.startswith("int8"):
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert meta.extra["calibration"]["images"] == 128
    # keep_io_types: float32 in and out
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = ort_session(path, disabled_optimizers=meta.extra.get("ort_disabled_optimizers"))
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    logits = session.run(None, {"images": x})[0]
    assert logits.shape == (3, 6) and np.isfinite(logits).all()


def test_fp16_skeleton_conversion_equals_autocast_on_the_whole_graph(trained):
    """to_fp16 hands AutoCast a weight-free skeleton and casts the weights afterwards: the graph
    must compute exactly what AutoCast's conversion of the whole graph computes."""
    from modelopt.onnx import autocast
    from onnx import numpy_helper

    from mlic_edge.export.precision import FP16_EXCLUDE, _modelopt_quiet, to_fp16

    with _modelopt_quiet():
        whole = autocast.convert_to_f16(onnx.load(str(trained["fp32"])), low_precision_type="fp16",
                                        keep_io_types=True, op_block_list=list(FP16_EXCLUDE))
    skeleton = to_fp16(Path(trained["fp32"]))

    def summary(model):
        types = {i.name: i.type.tensor_type.elem_type for i in [*model.graph.value_info, *model.graph.output]}
        fp32_ops = sorted(n.op_type for n in model.graph.node
                          if n.op_type != "Cast" and any(types.get(o) == onnx.TensorProto.FLOAT for o in n.output))
        init_types = sorted(i.data_type for i in model.graph.initializer)
        return fp32_ops, init_types, [i.name for i in model.graph.input]

    assert summary(skeleton) == summary(whole)
    assert "LayerNormalization" in summary(skeleton)[0]

    def weight_name(name: str) -> str:   # the skeleton names an FP16 weight after AutoCast's Cast
        return name.removesuffix("_cast_to_fp16")

    tiny = np.finfo(np.float16).smallest_subnormal

    def weight(tensor) -> tuple[int, bytes]:
        """A weight's type and values; to_fp16 keeps the sign of values rounded up to FP16's
        smallest subnormal, AutoCast makes them positive: the one intended difference."""
        values = numpy_helper.to_array(tensor)
        if values.dtype == np.float16:
            values = np.where(np.abs(values) == tiny, tiny, values).astype(np.float16)
        return tensor.data_type, values.tobytes()

    def canonical(model):
        """Nodes and initializers, FP16 weights under one name. The same graph is checked, not
        only its outputs: whether ONNX Runtime's kernels read subnormal weights as zero depends on
        the process's floating-point flags."""
        nodes = [(n.op_type, [weight_name(i) for i in n.input], list(n.output),
                  [a.SerializeToString() for a in n.attribute]) for n in model.graph.node]
        return nodes, {weight_name(i.name): weight(i) for i in model.graph.initializer}

    assert canonical(skeleton) == canonical(whole)
    keep_sign_of_tiny_negatives(whole, onnx.load(str(trained["fp32"])))   # then the weights are equal too
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    outputs = [ort_session(m).run(None, {"images": x})[0] for m in (whole, skeleton)]
    np.testing.assert_array_equal(outputs[1], outputs[0])


def keep_sign_of_tiny_negatives(converted, fp32) -> dict[str, int]:
    """AutoCast turns a negative FP32 weight smaller than FP16's smallest subnormal into
    +subnormal; our conversion keeps its sign. Apply that one rule to AutoCast's graph, in place,
    independently of the exporter's code; returns how many values it changed per weight."""
    from onnx import numpy_helper

    tiny = np.finfo(np.float16).smallest_subnormal
    sources = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    changed = {}
    for init in converted.graph.initializer:
        source = sources.get(init.name)
        if source is None or init.data_type != onnx.TensorProto.FLOAT16:
            continue
        rule = (source < 0) & (source > -tiny)
        if rule.any():
            values = numpy_helper.to_array(init).copy()
            assert (values[rule] == tiny).all()       # what AutoCast makes of them
            values[rule] = -tiny
            init.CopyFrom(numpy_helper.from_array(values, init.name))
            changed[init.name] = int(rule.sum())
    return changed


def test_fp16_graph_bytes_do_not_depend_on_the_hash_seed(trained, tmp_path):
    """The same FP32 graph converts to the same FP16 file in every process (AutoCast's set order
    follows PYTHONHASHSEED), so an engine built from it is reused, not rebuilt."""
    script = ("import sys; from pathlib import Path; from mlic_edge.core.files import file_sha256; "
              "from mlic_edge.export.onnx_export import _save; from mlic_edge.export.precision import to_fp16; "
              "out = Path(sys.argv[2]); _save(to_fp16(Path(sys.argv[1])), out); print(file_sha256(out))")
    digests = {subprocess.run([sys.executable, "-c", script, str(trained["fp32"]), str(tmp_path / f"{seed}.onnx")],
                              check=True, text=True, capture_output=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()[-1]
               for seed in ("1", "2", "3")}
    assert len(digests) == 1


def test_calibration_cache_is_reused(trained):
    files = sorted(Path(trained["cache"]).glob("calib-*.npy"))
    assert len(files) == 2  # one per source (folder, dataset)
    from mlic_edge.export.calibration import calibration_from_folder
    before = {f: f.stat().st_mtime_ns for f in files}
    again = calibration_from_folder(trained["calib_dir"], preprocess_spec(), 128, cache_dir=trained["cache"])
    assert again.shape == (128, 3, 64, 64)
    assert {f: f.stat().st_mtime_ns for f in files} == before


# ----------------------------------------------------------------------------------- CLI errors
def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    from mlic_edge.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_cli_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    code, output = _run_cli(["export", bad, "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "broken.pt" in lines[0]


def test_cli_empty_calibration_folder_is_one_line(tmp_path, capsys):
    ckpt = save_random_checkpoint(tmp_path / "m.pt", tiny_config())
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code, output = _run_cli(["export", ckpt, "--out", tmp_path / "m.onnx", "--precision", "int8",
                             "--calib", empty], capsys)
    assert code == 2
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no-images" in lines[0] and "no images" in lines[0]


def test_cli_export_fp32(tmp_path, capsys):
    ckpt = save_random_checkpoint(tmp_path / "m.pt", tiny_config(encoder="standard"))
    code, output = _run_cli(["export", ckpt, "--out", tmp_path / "m.onnx", "--batch-dim", "4"], capsys)
    assert code == 0, output
    assert read_metadata(tmp_path / "m.onnx").extra["batch"] == 4
    assert "dynamo" in output and "deprecated" not in output


def test_cli_export_batch_alias_still_works_with_a_warning(tmp_path, capsys):
    ckpt = save_random_checkpoint(tmp_path / "m.pt", tiny_config(encoder="standard"))
    code, output = _run_cli(["export", ckpt, "--out", tmp_path / "m.onnx", "--batch", "3"], capsys)
    assert code == 0, output
    assert read_metadata(tmp_path / "m.onnx").extra["batch"] == 3
    assert "warning: --batch is deprecated" in output and "use --batch-dim" in output
    code, output = _run_cli(["export", ckpt, "--out", tmp_path / "n.onnx", "--batch", "3", "--batch-dim", "2"], capsys)
    assert code == 2 and "disagree" in output and not (tmp_path / "n.onnx").exists()


def test_cli_export_refuses_an_unknown_precision_or_target_in_one_line(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    for flag, value in (("--precision", "int4"), ("--target", "tpu")):
        code, output = _run_cli(["export", ckpt, "--out", tmp_path / "m.onnx", flag, value], capsys)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and flag in lines[0] and value in lines[0], output


# ----------------------------------------------------------------------------------- steps
def test_export_steps_run_alone(tmp_path):
    """The steps compose: load + trace + write gives a valid, unchecked fp32 graph; the check
    step run afterwards on the same state measures it."""
    from mlic_edge.export.onnx_export import (
        ExportOptions,
        check_against_torch,
        export_state,
        load_checkpoint,
        trace,
        write_onnx,
    )

    ckpt = save_random_checkpoint(tmp_path / "m.pt", tiny_config())
    options = ExportOptions(batch=2)
    with export_state(ckpt, tmp_path / "traced.onnx") as state:
        load_checkpoint(options, state)
        trace(options, state)
        assert state.model is None and state.graph.is_file() and state.fp32_error is None
        write_onnx(options, state)
        written = state.result
        check_against_torch(options, state)
    assert written.path.is_file() and written.fp32_max_rel_error is None and written.batch == 2
    assert state.fp32_error <= 1e-4
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    _assert_matches_torch(written.path, ckpt, x)
    meta = read_metadata(written.path)
    assert meta.precision == "fp32" and meta.extra["batch"] == 2 and meta.extra["fp32_max_rel_error"] is None


def test_export_options_are_checked_before_any_work(tmp_path):
    from mlic_edge.core.errors import ConfigError, ExportError
    from mlic_edge.export.onnx_export import ExportOptions, export_onnx

    with pytest.raises(ConfigError, match="precision 'int4'"):
        ExportOptions(precision="int4")
    with pytest.raises(ConfigError, match="target 'tpu'"):
        export_onnx(tmp_path / "missing.pt", target="tpu")
    with pytest.raises(ExportError, match="opset"):
        ExportOptions(opset=16)
    assert not list(tmp_path.iterdir())


def test_export_onnx_writes_beside_the_checkpoint_by_default(tmp_path):
    from mlic_edge.export.onnx_export import default_onnx_path, export_onnx

    ckpt = save_random_checkpoint(tmp_path / "best.pt", tiny_config(encoder="standard"))
    assert default_onnx_path(ckpt, "int8", "cpu") == tmp_path / "best.int8-cpu.onnx"
    result = export_onnx(ckpt, check=False)
    assert result.path == tmp_path / "best.fp32.onnx" and result.path.is_file()
