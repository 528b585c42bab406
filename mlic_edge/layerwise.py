"""Layer-wise comparison: where does an fp16 / int8 graph lose the precision of the fp32 graph?

    report = compare_layers("model_fp32.onnx", "model_int8.onnx", images)   # images (B, 3, S, S)

Both graphs run on ONNX Runtime (CPU) with every intermediate tensor marked as an output, the way
polygraphy's `run --onnx-outputs mark all` comparison works. Tensors are matched by name (the
fp16 / int8 converters keep the fp32 graph's tensor names and add their own Cast / Q / DQ
tensors, which have no counterpart and are skipped). Per tensor:

* rel_mean = mean |candidate - reference| / mean |reference|  (how wrong the tensor is overall),
* rel_max  = max |candidate - reference| / max |reference|,

in the fp32 graph's topological order. The first jump is the first tensor whose rel_mean is at
least `jump` times the largest rel_mean before it, and at least `floor`: errors grow gently
through a network, so the layer where they multiply is where the precision goes.

Memory: every activation of one batch is held at once (both graphs), so use a few images.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

JUMP = 10.0       # a tensor whose error is this many times the worst error before it
FLOOR = 1e-3      # ... and at least this relative error (below it, rounding noise)


def _all_tensor_model(path: Path):
    """The graph with every float node output marked as a graph output, + the node of each."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # very large or unusual graphs: keep untyped outputs
        inferred = model
    types = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    existing = {o.name for o in model.graph.output}
    producers: dict[str, Any] = {}
    for node in model.graph.node:
        for name in node.output:
            if not name:
                continue
            producers[name] = node
            info = types.get(name)
            floating = info is None or info.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16,
                                                                           TensorProto.DOUBLE)
            if name not in existing and floating:
                model.graph.output.append(info if info is not None else onnx.helper.make_empty_tensor_value_info(name))
                existing.add(name)
    return model, producers


def run_all_tensors(path: str | os.PathLike, images: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """({tensor name: value}, {tensor name: producing node}) of one run of `path` on `images`."""
    from .core.onnx_metadata import read_metadata
    from .core.onnxruntime import CPU, make_session
    from .kernels.irpe_reference import ort_session_inputs

    path = Path(path)
    meta = read_metadata(path)
    model, producers = _all_tensor_model(path)
    session = make_session(model, [CPU], disabled_optimizers=meta.extra.get("ort_disabled_optimizers"),
                           prepare=ort_session_inputs)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {meta.input_name: images.astype(np.float32)})
    return dict(zip(names, values)), producers


def compare_layers(reference: str | os.PathLike, candidate: str | os.PathLike, images: np.ndarray, *,
                   jump: float = JUMP, floor: float = FLOOR) -> dict[str, Any]:
    """Every tensor both graphs compute, in the reference's order, with its error; the first jump."""
    ref_values, ref_nodes = run_all_tensors(reference, images)
    cand_values, _ = run_all_tensors(candidate, images)
    rows, worst_before, first_jump = [], 0.0, None
    for name, node in ref_nodes.items():          # node order = topological order of the fp32 graph
        ref, cand = ref_values.get(name), cand_values.get(name)
        if ref is None or cand is None or ref.shape != cand.shape or ref.size == 0:
            continue
        ref64 = ref.astype(np.float64)
        diff = np.abs(cand.astype(np.float64) - ref64)
        scale_mean, scale_max = float(np.abs(ref64).mean()), float(np.abs(ref64).max())
        if not np.isfinite(diff).all():
            rel_mean = rel_max = float("inf")
        else:
            rel_mean = float(diff.mean()) / max(scale_mean, 1e-12)
            rel_max = float(diff.max()) / max(scale_max, 1e-12)
        row = {"index": len(rows), "tensor": name, "node": node.name, "op": node.op_type,
               "shape": list(ref.shape), "rel_mean": rel_mean, "rel_max": rel_max, "first_jump": False}
        if first_jump is None and rel_mean >= floor and rel_mean >= jump * worst_before:
            row["first_jump"] = True
            first_jump = row
        worst_before = max(worst_before, rel_mean)
        rows.append(row)
    ranked = sorted(rows, key=lambda r: -r["rel_mean"])
    return {"reference": str(reference), "candidate": str(candidate), "images": int(len(images)),
            "compared": len(rows), "jump": jump, "floor": floor, "first_jump": first_jump,
            "tensors": rows, "ranked": [r["index"] for r in ranked]}


def format_report(report: dict[str, Any], top: int = 15) -> list[str]:
    """Lines a person reads: the worst tensors, the first jump marked."""
    rows = report["tensors"]
    lines = [f"layer-wise: {Path(report['candidate']).name} vs {Path(report['reference']).name} "
             f"({report['images']} images, {report['compared']} tensors compared)"]
    jump = report["first_jump"]
    lines.append(f"first jump: {jump['tensor']} ({jump['op']} {jump['node']}), rel. error {jump['rel_mean']:.3g} "
                 f"(tensor {jump['index'] + 1} of {len(rows)})" if jump else
                 f"no jump: no tensor's error reaches {report['jump']:g}x the worst before it and {report['floor']:g}")
    lines.append(f"{'#':>5}  {'rel mean':>9}  {'rel max':>9}  {'op':<18} tensor")
    for index in report["ranked"][:top]:
        row = rows[index]
        mark = "  <- first jump" if row["first_jump"] else ""
        lines.append(f"{row['index'] + 1:>5}  {row['rel_mean']:>9.3g}  {row['rel_max']:>9.3g}  {row['op']:<18} "
                     f"{row['tensor']}{mark}")
    return lines
