"""Check an ONNX graph against TensorRT's ONNX operator support (resources/trt_onnx_ops.txt).

Every graph we export for TensorRT must parse on TensorRT 10.x (JetPack 6) and 11.x, and we have no
TensorRT here, so the check is static: default-domain ops only, each in the support list, opset in
the range both versions parse, plus the per-op restrictions our graphs could hit.
"""
from __future__ import annotations

import functools
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from ..kernels.irpe_reference import is_irpe_plugin_node
from ..core.errors import UnsupportedOpsError

# TensorRT 10.0-10.3 parses opsets 9-20 (TensorRT 11: 9-25); stay inside both.
TRT_MIN_OPSET = 9
TRT_MAX_OPSET = 20
DEFAULT_DOMAINS = ("", "ai.onnx")


@functools.lru_cache(maxsize=1)
def load_trt_ops() -> frozenset[str]:
    """Op types of resources/trt_onnx_ops.txt (comments and blank lines skipped)."""
    text = resources.files("mlic_edge").joinpath("resources/trt_onnx_ops.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))


def _iter_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:  # If / Loop / Scan bodies
            if attr.g is not None and attr.HasField("g"):
                yield from _iter_nodes(attr.g)
            for sub in attr.graphs:
                yield from _iter_nodes(sub)


def _zero_point_nonzero(model, name: str) -> bool:
    from onnx import numpy_helper
    for init in model.graph.initializer:
        if init.name == name:
            return bool(numpy_helper.to_array(init).any())
    for node in model.graph.node:  # Constant-node zero points
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    return bool(numpy_helper.to_array(attr.t).any())
    return False  # computed at run time: cannot tell statically


def check_trt_ops(model: Any) -> list[str]:
    """Problems that would stop TensorRT's ONNX parser; empty list = compatible.

    `model` is an onnx.ModelProto or a path to one.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    supported = load_trt_ops()
    problems: list[str] = []
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and not TRT_MIN_OPSET <= opset.version <= TRT_MAX_OPSET:
            problems.append(f"opset {opset.version} outside {TRT_MIN_OPSET}-{TRT_MAX_OPSET} "
                            f"(the range TensorRT 10.x and 11.x both parse)")
    custom: Counter[str] = Counter()
    unsupported: Counter[str] = Counter()
    for node in _iter_nodes(model.graph):
        if is_irpe_plugin_node(node):  # registered by mlic-edge before parsing (tensorrt/plugin.py)
            continue
        if node.domain not in DEFAULT_DOMAINS:
            custom[f"{node.domain}::{node.op_type}"] += 1
            continue
        if node.op_type not in supported:
            unsupported[node.op_type] += 1
        elif node.op_type == "LayerNormalization" and sum(1 for o in node.output if o) > 1:
            problems.append(f"LayerNormalization {node.name!r} uses Mean/InvStdDev outputs "
                            f"(TensorRT supports output Y only)")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 \
                and node.input[2] and _zero_point_nonzero(model, node.input[2]):
            problems.append(f"{node.op_type} {node.name!r} has a non-zero zero point "
                            f"(TensorRT needs symmetric quantization)")
    if custom:
        problems.append("custom-domain nodes: " + ", ".join(f"{k} x{v}" for k, v in sorted(custom.items())))
    if unsupported:
        problems.append("ops not in TensorRT's ONNX support list: "
                        + ", ".join(f"{k} x{v}" for k, v in sorted(unsupported.items())))
    return problems


def assert_trt_compatible(model: Any, what: str = "graph") -> None:
    problems = check_trt_ops(model)
    if problems:
        raise UnsupportedOpsError(f"{what} would not parse in TensorRT: " + "; ".join(problems))


def op_histogram(model: Any) -> dict[str, int]:
    """Op type -> count over the graph (subgraphs included), for reports."""
    counts = Counter(n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}"
                     for n in _iter_nodes(model.graph))
    return dict(sorted(counts.items()))
