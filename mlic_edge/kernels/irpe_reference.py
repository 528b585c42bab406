"""The `IRPEAttention` plugin node: its contract, and its reference implementation for ONNX Runtime.

`mlic-edge export --irpe-plugin` replaces each encoder's iRPE attention core (everything between
the q/k/v projections and the output projection) with one node:

    IRPEAttention(q, k, v, bucket_ids, query_table, key_table, value_table) -> out
        q, k, v, out   (B, L, H * dh), the projections' layout (heads interleaved), float32/float16
        bucket_ids     (L, L) int32, R[i, j] of mlic_edge.model.irpe.bucket_ids
        query_table    (H', dh, N)  key_table (H', dh, N)  value_table (H', N, dh); H' = 1 or H,
                       zeros for the sides the model has no iRPE on
        attributes     num_heads (int), scale (float, head_dim ** -0.5),
                       plugin_namespace "mlic_edge", plugin_version "1" (TensorRT's parser looks
                       the plugin up by op type, version and namespace; it ignores the domain)

TensorRT runs it with `mlic_edge.tensorrt.plugin`. ONNX Runtime runs it with the Python op
below (onnxruntime-extensions; its Python ops live in the domain "ai.onnx.contrib", which is why
the node carries that domain), so plugin-mode graphs are parity-checked on the CPU like any other.
It computes in float64 with numpy (no torch): a reference, not a fast path.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import BackendUnavailable

OP_TYPE = "IRPEAttention"
PLUGIN_NAMESPACE = "mlic_edge"
PLUGIN_VERSION = "1"
ORT_DOMAIN = "ai.onnx.contrib"
# The node's inputs, in order: the export writes them so, the TensorRT plugin's functions and the
# Triton kernel take them so (their signatures must spell them out; they are checked against this).
PLUGIN_INPUTS = ("q", "k", "v", "bucket_ids", "query_table", "key_table", "value_table")
INT_INPUTS = ("bucket_ids",)


def irpe_attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, bucket_ids: np.ndarray,
                             query_table: np.ndarray, key_table: np.ndarray, value_table: np.ndarray,
                             num_heads: int, scale: float) -> np.ndarray:
    """The node's math (see mlic_edge.model.irpe / attention): (B, L, d) -> (B, L, d), q's dtype."""
    B, L, d = q.shape
    head_dim = d // int(num_heads)

    def heads(x: np.ndarray) -> np.ndarray:                       # (B, L, d) -> (B, H, L, dh)
        return x.astype(np.float64).reshape(B, L, num_heads, head_dim).transpose(0, 2, 1, 3)

    q_s, k_h, v_h = heads(q) * scale, heads(k), heads(v)
    ids = np.broadcast_to(bucket_ids.astype(np.int64), (B, num_heads, L, L))
    wq, wk, wv = (t.astype(np.float64) for t in (query_table, key_table, value_table))

    logits = q_s @ k_h.transpose(0, 1, 3, 2)                      # (B, H, L, L)
    logits += np.take_along_axis(q_s @ wk, ids, axis=3)           # key side: (q_s Wk)[R_ij]
    logits += np.take_along_axis((k_h * scale) @ wq, ids, axis=3).transpose(0, 1, 3, 2)  # [R_ji]
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)

    one_hot = np.eye(wv.shape[1])[bucket_ids.astype(np.int64)]    # (L, L, N)
    mass = np.einsum("bhij,ijn->bhin", weights, one_hot)          # attention mass per bucket
    out = weights @ v_h + mass @ wv                               # (B, H, L, dh)
    return out.transpose(0, 2, 1, 3).reshape(B, L, d).astype(q.dtype)


_library_path: str | None = None


def ort_custom_op_library() -> str:
    """Register the reference op with onnxruntime-extensions (once); its library path for
    `SessionOptions.register_custom_ops_library`."""
    global _library_path
    if _library_path is not None:
        return _library_path
    try:
        from onnxruntime_extensions import PyOp, get_library_path, onnx_op
    except ImportError:
        raise BackendUnavailable("this ONNX file has IRPEAttention plugin nodes; running them on ONNX "
                                 "Runtime needs onnxruntime-extensions: pip install "
                                 "'mlic-edge[plugin]'") from None

    float_ = PyOp.dt_float
    attrs = {"num_heads": PyOp.dt_int64, "scale": PyOp.dt_float,
             "plugin_namespace": PyOp.dt_string, "plugin_version": PyOp.dt_string}

    @onnx_op(op_type=OP_TYPE, inputs=[float_, float_, float_, PyOp.dt_int32, float_, float_, float_],
             outputs=[float_], attrs=attrs)
    def _irpe_attention(q, k, v, bucket_ids, query_table, key_table, value_table, num_heads, scale,
                        plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION):
        return irpe_attention_reference(q, k, v, bucket_ids, query_table, key_table, value_table,
                                        num_heads, scale)

    _library_path = get_library_path()
    return _library_path


def is_irpe_plugin_node(node) -> bool:
    """Our plugin node: op type, namespace and version as TensorRT's parser matches them."""
    if node.op_type != OP_TYPE:
        return False
    attrs = {a.name: a.s.decode() for a in node.attribute if a.name.startswith("plugin_")}
    return attrs.get("plugin_namespace") == PLUGIN_NAMESPACE and attrs.get("plugin_version") == PLUGIN_VERSION


def plugin_nodes(proto) -> list:
    return [n for n in proto.graph.node if is_irpe_plugin_node(n)]


def with_float32_plugin_io(proto):
    """Copy of `proto` where float16 IRPEAttention nodes get Cast nodes around them.

    The reference op is declared for float32 (onnxruntime-extensions binds one type signature per
    op); TensorRT gets the file as written, float16 plugin I/O included.
    """
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({init.name: init.data_type for init in proto.graph.initializer})
    fp16 = TensorProto.FLOAT16
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes = []
    for node in out.graph.node:
        if not is_irpe_plugin_node(node) or types.get(node.input[0]) != fp16:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if types.get(name) == fp16:
                cast_name = f"{node.name}/{i}_fp32"
                nodes.append(helper.make_node("Cast", [name], [cast_name], to=TensorProto.FLOAT, name=cast_name))
                node.input[i] = cast_name
        result = node.output[0]
        node.output[0] = f"{node.name}/out_fp32"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [result], to=fp16, name=f"{node.name}/out_fp16"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def ort_session_inputs(proto, options) -> bytes:
    """Serialized model to open in ONNX Runtime with `options`; registers the reference op when the
    graph has IRPEAttention nodes."""
    if plugin_nodes(proto):
        options.register_custom_ops_library(ort_custom_op_library())
        proto = with_float32_plugin_io(proto)
    return proto.SerializeToString()
