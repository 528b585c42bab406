"""Plugin-mode export (`--irpe-plugin`): the IRPEAttention node, its ONNX Runtime reference op and
its build-engine preparation. (The plugin kernel's launch contract and its PTX: test_irpe_kernel.py.)

The trained tiny model of test_export is exported with plugin nodes in fp32, fp16 and int8; each
graph runs on ONNX Runtime through the reference op and must agree with the lowered graph it was
cut from (fp32: max relative logit error 1e-5) and keep the PyTorch mAP (parity).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tiny_model import one_thread

from mlic_edge.export import export_onnx  # noqa: E402
from mlic_edge.export.onnx_export import compare_graphs, ort_session  # noqa: E402
from mlic_edge.tensorrt.onnx_ops import check_trt_ops  # noqa: E402
from mlic_edge.model.irpe import bucket_ids  # noqa: E402
from mlic_edge.parity import run_parity  # noqa: E402
from mlic_edge.runtime import open_backend  # noqa: E402
from mlic_edge.core.onnx_metadata import read_metadata  # noqa: E402

pytest.importorskip("onnx_graphsurgeon")
pytest.importorskip("onnxruntime_extensions")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def plugin_graphs(trained, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plugin")
    graphs = {"trained": trained}
    graphs["fp32"] = export_onnx(trained["ckpt"], out / "fp32.plugin.onnx", irpe_plugin=True).path
    graphs["fp16"] = export_onnx(trained["ckpt"], out / "fp16.plugin.onnx", precision="fp16",
                                 irpe_plugin=True).path
    graphs["int8"] = export_onnx(trained["ckpt"], out / "int8.plugin.onnx", precision="int8",
                                 calib=trained["calib_dir"], calib_images=128,
                                 calib_cache_dir=trained["cache"], irpe_plugin=True).path
    return graphs


def _plugin_nodes(path: Path) -> list:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == "IRPEAttention"]


def test_plugin_node_replaces_the_attention_core(plugin_graphs):
    lowered = onnx.load(str(plugin_graphs["trained"]["fp32"]))
    plugin = onnx.load(str(plugin_graphs["fp32"]))
    nodes = _plugin_nodes(plugin_graphs["fp32"])
    assert len(nodes) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_namespace"] == b"mlic_edge" and attrs["plugin_version"] == b"1"
    assert attrs["num_heads"] == 4 and attrs["scale"] == pytest.approx(8 ** -0.5)
    ops = [n.op_type for n in plugin.graph.node]
    # the encoder's softmax and bucket gathers are gone; the decoder's cross-attention softmax stays
    assert ops.count("GatherElements") == 0 and ops.count("Softmax") == \
        [n.op_type for n in lowered.graph.node].count("Softmax") - 1
    ids = next(i for i in plugin.graph.initializer if i.name == nodes[0].input[3])
    meta = read_metadata(plugin_graphs["fp32"])
    grid = meta.extra["feature_grid"]
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(ids), bucket_ids(*grid, 1.9).numpy())
    assert check_trt_ops(plugin) == []                      # our plugin passes the TensorRT op check
    assert meta.extra["irpe_plugin"]["nodes"] == 1


def test_fp32_plugin_graph_matches_the_lowered_graph(plugin_graphs):
    lowered = onnx.load(str(plugin_graphs["trained"]["fp32"]))
    plugin = onnx.load(str(plugin_graphs["fp32"]))
    error = compare_graphs(lowered, plugin, (1, 4), 64, seed=3)
    assert error < 1e-5
    assert read_metadata(plugin_graphs["fp32"]).extra["irpe_plugin"]["max_rel_error_vs_lowered"] < 1e-5


def test_reduced_precision_plugin_graphs(plugin_graphs):
    fp16 = onnx.load(str(plugin_graphs["fp16"]))
    node = _plugin_nodes(plugin_graphs["fp16"])[0]
    types = {i.name: i.data_type for i in fp16.graph.initializer}
    assert types[node.input[4]] == onnx.TensorProto.FLOAT16     # the tables follow the node's type
    int8 = onnx.load(str(plugin_graphs["int8"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    for name in ("fp16", "int8"):
        assert check_trt_ops(onnx.load(str(plugin_graphs[name]))) == []
        error = compare_graphs(onnx.load(str(plugin_graphs["trained"][name])),
                               onnx.load(str(plugin_graphs[name])), (2,), 64)
        assert error < (0.02 if name == "fp16" else 0.25), name


def test_plugin_graphs_keep_the_pytorch_map(plugin_graphs):
    trained = plugin_graphs["trained"]
    report = run_parity(trained["ckpt"], [plugin_graphs[p] for p in ("fp32", "fp16", "int8")],
                        data="folder", data_root=trained["data_root"], split="test")
    assert report.passed, report.to_dicts()
    assert abs(report.rows[0].delta_map) < 0.01


def test_runtime_backend_runs_plugin_graphs(plugin_graphs):
    backend = open_backend(plugin_graphs["fp32"], device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    logits = backend.predict(x)["logits"]
    lowered = ort_session(plugin_graphs["trained"]["fp32"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(logits, lowered, rtol=1e-4, atol=1e-5)


def test_trt_op_check_rejects_foreign_plugins(plugin_graphs):
    model = onnx.load(str(plugin_graphs["fp32"]))
    node = next(n for n in model.graph.node if n.op_type == "IRPEAttention")
    for attr in node.attribute:
        if attr.name == "plugin_namespace":
            attr.s = b"someone_else"
    assert any("custom-domain" in p for p in check_trt_ops(model))


def test_build_engine_prepares_and_reuses_plugin_onnx(plugin_graphs, tmp_path):
    """build-engine's ONNX stage (runs without TensorRT): plugin option honoured and part of reuse."""
    from mlic_edge.core.errors import ModelFileError
    from mlic_edge.export.engine import prepare_onnx

    ckpt = plugin_graphs["trained"]["ckpt"]
    out = tmp_path / "model.fp32.onnx"
    _, meta, _, reused, _ = prepare_onnx(ckpt, "fp32", out, irpe_plugin=True)
    assert not reused and meta.extra["irpe_plugin"]["nodes"] == 1
    assert prepare_onnx(ckpt, "fp32", out, irpe_plugin=True)[3]               # same request: reused
    _, meta, _, reused, _ = prepare_onnx(ckpt, "fp32", out, irpe_plugin=False)
    assert not reused and not meta.extra["irpe_plugin"]
    with pytest.raises(ModelFileError, match="cannot be converted"):
        prepare_onnx(plugin_graphs["fp32"], "fp16", tmp_path / "x.fp16.onnx")
    with pytest.raises(ModelFileError, match="--irpe-plugin"):
        prepare_onnx(plugin_graphs["trained"]["fp32"], None, tmp_path / "y.onnx", irpe_plugin=True)
