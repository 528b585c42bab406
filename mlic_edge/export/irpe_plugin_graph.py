"""Plugin-mode graphs: each encoder's iRPE attention core becomes one `IRPEAttention` node.

The lowered export stays the single source of the math: we export, check and quantize the lowered
graph as usual, then cut out the core with onnx-graphsurgeon (the pattern of its example
08_replacing_a_subgraph) and put the plugin node in its place. Quantization has to come first:
INT8 calibration runs the graph on ONNX Runtime, which cannot run TensorRT plugins.

The cut is found from names the exporters keep (the projections' bias initializers):

    q = Add(.., <layer>.q_proj.bias)   k = Add(.., k_proj.bias)   v = Add(.., v_proj.bias)
    core output = data input of the MatMul feeding Add(.., <layer>.out_proj.bias), before any
                  Q/DQ or Cast that quantization / fp16 conversion put in front of that MatMul

and the core is every node on a path from q, k or v to the core output. The node contract is in
`mlic_edge.kernels.irpe_reference`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels.irpe_reference import (
    OP_TYPE,
    ORT_DOMAIN,
    PLUGIN_INPUTS,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from ..core.errors import ExportError

PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Cast")


def _consumer_of(graph, initializer_name: str, op_type: str):
    """The `op_type` node that consumes the initializer, directly or through Cast / Q / DQ."""
    frontier = [t for t in graph.tensors().values() if t.name == initializer_name]
    while frontier:
        tensor = frontier.pop()
        for node in tensor.outputs:
            if node.op == op_type:
                return node
            if node.op in PASS_THROUGH:
                frontier.extend(node.outputs)
    return None


def _before_pass_through(tensor):
    while len(tensor.inputs) == 1 and tensor.inputs[0].op in PASS_THROUGH:
        tensor = tensor.inputs[0].inputs[0]
    return tensor


def _core_nodes(graph, inputs: list, output) -> list:
    """Nodes on a path from any of `inputs` to `output`."""
    forward, stack = set(), [n for t in inputs for n in t.outputs]
    while stack:
        node = stack.pop()
        if id(node) not in forward:
            forward.add(id(node))
            stack.extend(n for t in node.outputs for n in t.outputs)
    core, stack, seen = [], list(output.inputs), set()
    while stack:
        node = stack.pop()
        if id(node) in seen or id(node) not in forward:
            continue
        seen.add(id(node))
        core.append(node)
        stack.extend(p for t in node.inputs for p in t.inputs)
    return core


def _tables(irpe, head_dim: int, dtype) -> list[np.ndarray]:
    """(query, key, value) tables as numpy in the graph's float type; zeros for absent sides."""
    from ..model.irpe import num_buckets

    n_buckets = num_buckets(irpe.ratio)
    heads = next(m.weight.shape[0] for m in (irpe.query_bias, irpe.key_bias, irpe.value) if m is not None)
    shapes = [(heads, head_dim, n_buckets), (heads, head_dim, n_buckets), (heads, n_buckets, head_dim)]
    modules = (irpe.query_bias, irpe.key_bias, irpe.value)
    return [np.zeros(shape, dtype) if m is None else m.weight.detach().cpu().numpy().astype(dtype)
            for m, shape in zip(modules, shapes)]


def insert_irpe_plugins(proto: Any, model: Any) -> tuple[Any, int]:
    """Replace the iRPE attention core of every encoder layer of `model` in `proto`.

    Returns (new ModelProto, number of plugin nodes). ExportError when a layer's core cannot be
    located (a graph this function was not written for) or the model has no iRPE encoder.
    """
    import onnx
    import onnx_graphsurgeon as gs

    layers = [(i, layer.self_attn) for i, layer in enumerate(model.transformer.encoder)
              if layer.self_attn.irpe is not None]
    if not layers:
        raise ExportError("--irpe-plugin needs a model with an iRPE encoder (model.encoder: irpe)")
    graph = gs.import_onnx(proto)
    for index, attention in layers:
        prefix = f"model.transformer.encoder.{index}.self_attn"
        adds = [_consumer_of(graph, f"{prefix}.{p}_proj.bias", "Add") for p in ("q", "k", "v", "out")]
        if any(a is None for a in adds):
            raise ExportError(f"--irpe-plugin: cannot find the projections of {prefix} in the graph")
        q, k, v = (a.outputs[0] for a in adds[:3])
        out_matmul = next((t.inputs[0] for t in adds[3].inputs if t.inputs and t.inputs[0].op == "MatMul"), None)
        if out_matmul is None:
            raise ExportError(f"--irpe-plugin: {prefix}.out_proj is not a MatMul + Add in the graph")
        core_out = _before_pass_through(out_matmul.inputs[0])
        core = _core_nodes(graph, [q, k, v], core_out)
        inside = {id(n) for n in core}
        for node in core:  # the core may only feed itself and the output projection
            for tensor in node.outputs:
                if tensor is not core_out and (tensor in graph.outputs or
                                               any(id(c) not in inside for c in tensor.outputs)):
                    raise ExportError(f"--irpe-plugin: {prefix}: tensor {tensor.name} leaves the "
                                      f"attention core; cannot replace it")

        dtype = np.dtype(q.dtype if q.dtype is not None else np.float32)
        irpe = attention.irpe
        tables = _tables(irpe, attention.head_dim, dtype)
        inputs = {"q": q, "k": k, "v": v,
                  "bucket_ids": gs.Constant(f"{prefix}.irpe_plugin.bucket_ids", irpe.ids.cpu().numpy().astype(np.int32))}
        inputs.update({f"{side}_table": gs.Constant(f"{prefix}.irpe_plugin.{side}_table", table)
                       for side, table in zip(("query", "key", "value"), tables)})
        for node in core:  # detach the core; cleanup() drops it
            node.outputs.clear()
        plugin = gs.Node(op=OP_TYPE, name=f"{prefix}.irpe_attention", domain=ORT_DOMAIN,
                         attrs={"num_heads": int(attention.num_heads), "scale": float(attention.scale),
                                "plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION},
                         inputs=[inputs[name] for name in PLUGIN_INPUTS], outputs=[core_out])
        graph.nodes.append(plugin)

    graph.cleanup().toposort()
    opsets = [o for o in proto.opset_import if o.domain != ORT_DOMAIN]
    out = gs.export_onnx(graph, do_type_check=False)
    del out.opset_import[:]
    out.opset_import.extend(opsets + [onnx.helper.make_operatorsetid(ORT_DOMAIN, 1)])
    out.ir_version = proto.ir_version
    out.producer_name, out.producer_version = proto.producer_name, proto.producer_version
    del out.metadata_props[:]
    out.metadata_props.extend(proto.metadata_props)
    return out, len(layers)
