"""`mlic-edge export-triton MODEL --out repo/`: a model repository for NVIDIA's Triton containers.

    repo/<name>/               ensemble: image (BYTES [1]) -> scores (FP32 [K]), labels (BYTES [1])
    repo/<name>_preprocess/    Python backend: encoded file -> images FP32 [3, S, S] (OUR decoding + preprocessing)
    repo/<name>_model/         tensorrt_plan (1/model.plan) or onnxruntime_onnx (1/model.onnx): images -> logits [K]
    repo/<name>_postprocess/   Python backend: logits -> sigmoid scores, labels over the per-class thresholds
    repo/<name>_metadata/      Python backend: the model's metadata JSON (what `infer --server` reads)

Why Python models that do not import mlic_edge: the container has numpy (and, after `pip install
pillow`, PIL) but not this package. The generated model.py files carry a verbatim copy of the
decoding (core/image_bytes.py) and of `core.preprocess.preprocess`, taken from the installed package
when the repository is written, plus the model's spec (size, mean, std, classes, thresholds) as
literals; they are run against the local Tagger in the tests.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

from ..core.capabilities import model_format
from ..core.errors import ConfigError, ModelFileError
from ..runtime.backend import read_model_metadata
from ..core import image_bytes as decode
from .server import DEFAULT_MAX_BATCH, model_name


def _onnx_batch(path: Path) -> tuple[int | None, list[int]]:
    """(static batch or None when dynamic, [3, S, S]) of the ONNX file's image input."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        raise ModelFileError(f"{path}: the graph has no input")
    dims = inputs[0].type.tensor_type.shape.dim
    first = dims[0].dim_value if dims[0].HasField("dim_value") else None
    return first, [d.dim_value for d in dims[1:]]


def export_repository(model: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None,
                      max_batch: int | None = None, max_queue_delay_us: int = 2000, instances: int = 1,
                      kind: str = "gpu") -> list[str]:
    """Write the repository; returns the model names written (ensemble first)."""
    path, out = Path(model), Path(out)
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    runtime = model_format(path).backend
    if runtime == "torch":
        raise ConfigError(f"{path}: Triton's containers serve ONNX files and engines; export it first "
                          f"(mlic-edge export {path})")
    if kind not in ("gpu", "cpu"):
        raise ConfigError(f"--kind must be gpu or cpu, got {kind!r}")
    if runtime == "tensorrt" and kind == "cpu":
        raise ConfigError(f"{path}: TensorRT engines run on the GPU (--kind gpu)")
    if instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {instances}")
    name = model_name(path, name)
    meta = read_model_metadata(path)
    size = int(meta.preprocess["image_size"])
    K = len(meta.classes)
    if runtime == "tensorrt":
        from ..tensorrt.sidecar import read_engine_info

        profile = read_engine_info(path).profile
        if not profile:
            raise ConfigError(f"{path}: a static-batch engine; rebuild it with a batch profile for Triton's batcher")
        limit = int(profile["max"])
        batch = max_batch or limit
        if batch > limit:
            raise ConfigError(f"--max-batch {batch} is above the engine's profile max {limit}")
        platform, filename = "tensorrt_plan", "model.plan"
    else:
        static, shape = _onnx_batch(path)
        if static is not None:
            raise ConfigError(f"{path}: the graph has a fixed batch of {static}; export it with a dynamic batch")
        if shape != [3, size, size]:
            raise ModelFileError(f"{path}: input shape {shape} does not match the metadata's [3, {size}, {size}]")
        batch = max_batch or DEFAULT_MAX_BATCH
        platform, filename = "onnxruntime_onnx", "model.onnx"
    if batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {batch}")
    instance_kind = "KIND_GPU" if kind == "gpu" else "KIND_CPU"
    batcher = f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}\n"
    names = {"pre": f"{name}_preprocess", "model": f"{name}_model", "post": f"{name}_postprocess",
             "meta": f"{name}_metadata"}

    # the model itself, on its native backend
    model_dir = out / names["model"]
    _fresh(model_dir)
    shutil.copyfile(path, model_dir / "1" / filename)
    (model_dir / "labels.txt").write_text("\n".join(meta.classes) + "\n", encoding="utf-8")
    _write(model_dir / "config.pbtxt", f'''name: "{names["model"]}"
platform: "{platform}"
max_batch_size: {batch}
input [
  {{ name: "{meta.input_name}" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {K} ] label_filename: "labels.txt" }}
]
instance_group [ {{ count: {instances} kind: {instance_kind} }} ]
{batcher}''')

    # preprocessing, postprocessing and metadata: Python backend, on the CPU
    python_models = {
        names["pre"]: (f'''input [ {{ name: "image" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "images" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }} ]''', preprocess_source(meta.preprocess)),
        names["post"]: (f'''input [ {{ name: "logits" data_type: TYPE_FP32 dims: [ {K} ] }} ]
output [
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {K} ] }},
  {{ name: "labels" data_type: TYPE_STRING dims: [ 1 ] }}
]''', postprocess_source(meta.classes, meta.class_thresholds(str(path)).tolist())),
        names["meta"]: ('''input [ { name: "request" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "metadata" data_type: TYPE_STRING dims: [ 1 ] } ]''',
                        metadata_source(json.dumps({"metadata": json.loads(meta.to_json()),
                                                    "backend": {"backend": platform, "device": kind}}))),
    }
    for model_name_, (io, source) in python_models.items():
        folder = out / model_name_
        _fresh(folder)
        _write(folder / "1" / "model.py", source)
        _write(folder / "config.pbtxt", f'''name: "{model_name_}"
backend: "python"
max_batch_size: {batch}
{io}
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
{batcher}''')

    # the ensemble clients call
    ensemble = out / name
    _fresh(ensemble)
    _write(ensemble / "config.pbtxt", f'''name: "{name}"
platform: "ensemble"
max_batch_size: {batch}
input [ {{ name: "image" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {K} ] }},
  {{ name: "labels" data_type: TYPE_STRING dims: [ 1 ] }}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "{names["pre"]}"
      model_version: -1
      input_map {{ key: "image" value: "image" }}
      output_map {{ key: "images" value: "preprocessed" }}
    }},
    {{
      model_name: "{names["model"]}"
      model_version: -1
      input_map {{ key: "{meta.input_name}" value: "preprocessed" }}
      output_map {{ key: "logits" value: "logits" }}
    }},
    {{
      model_name: "{names["post"]}"
      model_version: -1
      input_map {{ key: "logits" value: "logits" }}
      output_map {{ key: "scores" value: "scores" }}
      output_map {{ key: "labels" value: "labels" }}
    }}
  ]
}}
''')
    return [name, names["pre"], names["model"], names["post"], names["meta"]]


def _fresh(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)


def _write(path: Path, text: str) -> None:
    from ..core.files import atomic_write_text

    atomic_write_text(path, text)


# ----------------------------------------------------------------------------------- model.py sources
_PYTHON_MODEL = '''"""Generated by `mlic-edge export-triton`: {what}. Runs in Triton's Python backend without
mlic_edge (numpy{pil}); one response per request, so a bad request fails alone."""
from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils
{body}

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = run({{name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}})
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
            except Exception as e:  # this request only
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    " ".join(str(e).split()) or type(e).__name__)))
        return responses
'''


def preprocess_source(spec: dict) -> str:
    """model.py of the preprocessing step: decode.py's functions and core.preprocess.preprocess,
    copied from this package, with the model's spec as literals."""
    from ..core import preprocess as core_preprocess
    from ..core.preprocess import preprocess_args

    size, mean, std, interpolation = preprocess_args(spec)
    parts = [
        "import io\nimport warnings\n",
        "INTERPOLATIONS = " + repr(core_preprocess.INTERPOLATIONS),
        "ORIENTATION = " + repr(decode.ORIENTATION),
        "ImageDecodeError = ValueError\n",
        "def pil():\n    import PIL.Image\n    import PIL.ImageOps\n    return PIL\n",
        inspect.getsource(decode.decode_image_bytes),
        inspect.getsource(decode._jpeg_reduced),
        inspect.getsource(decode._to_rgb),
        inspect.getsource(core_preprocess.preprocess),
        f"SPEC = ({size}, {mean!r}, {std!r}, {interpolation!r})   # image_size, mean, std, interpolation",
        'INPUTS = ["image"]\n',
        "def run(inputs):\n"
        "    rows = inputs[\"image\"].reshape(len(inputs[\"image\"]), -1)[:, 0]    # (B,) encoded files\n"
        "    images = [preprocess(decode_image_bytes(bytes(row), 'image', SPEC[0]), *SPEC) for row in rows]\n"
        "    return {\"images\": np.stack(images).astype(np.float32)}                  # (B, 3, S, S)\n",
    ]
    return _PYTHON_MODEL.format(what="bytes -> the model's preprocessed images", pil=", Pillow",
                                body="\n\n".join(parts))


def postprocess_source(classes: list[str], thresholds: list[float]) -> str:
    body = f'''
CLASSES = {json.dumps(list(classes))}
THRESHOLDS = np.array({json.dumps([float(t) for t in thresholds])}, dtype=np.float64)
INPUTS = ["logits"]


def run(inputs):
    logits = inputs["logits"].astype(np.float64)                            # (B, K)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))               # as mlic_edge.metrics.sigmoid
    labels = [";".join(c for c, s, t in zip(CLASSES, row, THRESHOLDS) if s >= t).encode() for row in scores]
    return {{"scores": scores.astype(np.float32), "labels": np.array(labels, dtype=object).reshape(-1, 1)}}
'''
    return _PYTHON_MODEL.format(what="sigmoid and the model's per-class thresholds", pil="", body=body)


def metadata_source(info: str) -> str:
    body = f'''
INFO = {json.dumps(info)}.encode()
INPUTS = ["request"]


def run(inputs):
    return {{"metadata": np.array([[INFO]] * len(inputs["request"]), dtype=object)}}
'''
    return _PYTHON_MODEL.format(what="the model's metadata for clients", pil="", body=body)
