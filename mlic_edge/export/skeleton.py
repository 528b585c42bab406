"""Graph passes on a weight-free skeleton, so that they never copy the weights.

onnx-graphsurgeon's import/export and Model Optimizer's AutoCast copy the whole graph, weights
included, several times (ResNet101 @448: 0.8 GB a copy). The export keeps its graphs on disk with
the weights in a .data file beside them (`torch_to_onnx`), and loads them without the weights:
initializers are then references into that file.

* graphsurgeon takes such references as they are (it writes the TensorProto it read), so the
  cleanup loads only the weights that a constant-foldable node reads (`foldable_reads`).
* AutoCast reads every initializer, so `lift_weights` takes the large ones out of the graph and
  declares each as a graph input of the same name, shape and type (a stand-in); `put_back`
  removes the stand-ins and reads the weights back one at a time, optionally converting each
  (fp16): at most one weight is in memory twice.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MIN_ELEMENTS = 1024     # smaller initializers stay in the graph (scales, shapes, small biases)


def foldable_reads(model) -> set[str]:
    """Initializers read by nodes whose inputs are all constant (what constant folding evaluates)."""
    constant = {i.name for i in model.graph.initializer}
    read = set()
    for node in model.graph.node:     # exporters write nodes in topological order
        if node.op_type == "Constant" or (node.input and all(not x or x in constant for x in node.input)):
            constant.update(node.output)
            read.update(x for x in node.input if x)
    return read


def load_data(tensor, base_dir: Path) -> None:
    """Read an external tensor's bytes from its file in `base_dir` into the tensor (no-op if inline)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    if uses_external_data(tensor):
        load_external_data_for_tensor(tensor, str(base_dir))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]


def lift_weights(model, base_dir: Path, *, min_elements: int = MIN_ELEMENTS):
    """Take float initializers of at least `min_elements` elements (not read by a constant-foldable
    node) out of `model` into a holder ModelProto; each becomes a graph input stand-in. The ones
    left in the graph are read from `base_dir` if external. Returns the holder."""
    import onnx
    from onnx import helper

    keep = foldable_reads(model)
    holder = onnx.ModelProto()
    remaining = []
    for tensor in model.graph.initializer:
        lift = (tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
                and int(np.prod(tensor.dims)) >= min_elements and tensor.name not in keep)
        (holder.graph.initializer.append if lift else remaining.append)(tensor)
    del model.graph.initializer[:]
    for tensor in remaining:
        load_data(tensor, base_dir)
    model.graph.initializer.extend(remaining)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in holder.graph.initializer)
    return holder


def put_back(model, holder, base_dir: Path, convert: Callable[[Any, Any], list[Any]] | None = None) -> None:
    """Remove the stand-in inputs of `holder`'s weights from `model` and read the weights back from
    `base_dir`, one at a time, in their original order. convert(model, tensor) -> the initializers
    to add in its place (it may also edit `model`'s nodes); a weight nothing reads is dropped."""
    names = {t.name for t in holder.graph.initializer}
    for info in [i for i in model.graph.input if i.name in names]:
        model.graph.input.remove(info)
    read = {x for node in model.graph.node for x in node.input} | {o.name for o in model.graph.output}
    for reference in holder.graph.initializer:
        if reference.name not in read:
            continue
        tensor = type(reference)()
        tensor.CopyFrom(reference)                 # a reference: a few bytes
        load_data(tensor, base_dir)
        model.graph.initializer.extend(convert(model, tensor) if convert else [tensor])
        del tensor
