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

from ..core import image_bytes as decode
from ..core.capabilities import model_format
from ..core.errors import ConfigError, ModelFileError
from ..core.preprocess import Preprocessing
from ..runtime.backend import read_model_metadata
from ..runtime.model import LoadedModel
from .defaults import DEFAULT_MAX_BATCH
from .server import model_name


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


# Triton's platform and file name for each model format (core.capabilities) its containers serve.
TRITON_PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "engine": ("tensorrt_plan", "model.plan")}
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


def export_repository(model: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None,
                      max_batch: int | None = None, max_queue_delay_us: int = 2000, instances: int = 1,
                      kind: str = "gpu") -> list[str]:
    """Write the repository; returns the model names written (ensemble first)."""
    path, out = Path(model), Path(out)
    fmt = _check_request(path, kind, instances)
    name = model_name(path, name)
    loaded = LoadedModel.from_metadata(read_model_metadata(path), str(path))
    batch = _max_batch(path, fmt, loaded, max_batch)
    platform, filename = TRITON_PLATFORMS[fmt.name]
    batcher = f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}\n"
    names = {"pre": f"{name}_preprocess", "model": f"{name}_model", "post": f"{name}_postprocess",
             "meta": f"{name}_metadata"}
    _write_model(out / names["model"], path, filename, loaded, platform=platform, batch=batch,
                 instances=f"instance_group [ {{ count: {instances} kind: {INSTANCE_KINDS[kind]} }} ]", batcher=batcher)
    for model_name_, (io, source) in _python_models(names, loaded, platform, kind).items():
        folder = out / model_name_
        _fresh(folder)
        _write(folder / "1" / "model.py", source)
        _write(folder / "config.pbtxt", f'''name: "{model_name_}"
backend: "python"
max_batch_size: {batch}
{io}
instance_group [ {{ count: 2 kind: KIND_CPU }} ]
{batcher}''')
    _write_ensemble(out / name, name, names, loaded, batch)
    return [name, names["pre"], names["model"], names["post"], names["meta"]]


def _check_request(path: Path, kind: str, instances: int):
    """The file's ModelFormat, or a one-line ConfigError for what Triton's containers cannot serve."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    fmt = model_format(path)
    if fmt.name not in TRITON_PLATFORMS:
        raise ConfigError(f"{path}: Triton's containers serve {' and '.join(TRITON_PLATFORMS)} files; "
                          f"export it first (mlic-edge export {path})")
    if kind not in INSTANCE_KINDS:
        raise ConfigError(f"--kind must be {' or '.join(INSTANCE_KINDS)}, got {kind!r}")
    if fmt.needs_gpu and kind == "cpu":
        raise ConfigError(f"{path}: {fmt.name} files run on the GPU (--kind gpu)")
    if instances < 1:
        raise ConfigError(f"--instances must be >= 1, got {instances}")
    return fmt


def _max_batch(path: Path, fmt, loaded: LoadedModel, max_batch: int | None) -> int:
    """The repository's max_batch_size: an engine's profile bounds it; an ONNX graph must take any batch."""
    size = loaded.image_size
    if fmt.name == "engine":
        from ..tensorrt.sidecar import read_engine_info

        profile = read_engine_info(path).profile
        if not profile:
            raise ConfigError(f"{path}: a static-batch engine; rebuild it with a batch profile for Triton's batcher")
        limit = int(profile["max"])
        batch = max_batch or limit
        if batch > limit:
            raise ConfigError(f"--max-batch {batch} is above the engine's profile max {limit}")
    else:
        static, shape = _onnx_batch(path)
        if static is not None:
            raise ConfigError(f"{path}: the graph has a fixed batch of {static}; export it with a dynamic batch")
        if shape != [3, size, size]:
            raise ModelFileError(f"{path}: input shape {shape} does not match the metadata's [3, {size}, {size}]")
        batch = max_batch or DEFAULT_MAX_BATCH
    if batch < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {batch}")
    return batch


def _write_model(folder: Path, path: Path, filename: str, loaded: LoadedModel, *, platform: str, batch: int,
                 instances: str, batcher: str) -> None:
    """The model itself, on its native backend."""
    size, K = loaded.image_size, len(loaded.classes)
    _fresh(folder)
    shutil.copyfile(path, folder / "1" / filename)
    (folder / "labels.txt").write_text("\n".join(loaded.classes) + "\n", encoding="utf-8")
    _write(folder / "config.pbtxt", f'''name: "{folder.name}"
platform: "{platform}"
max_batch_size: {batch}
input [
  {{ name: "{loaded.metadata.input_name}" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }}
]
output [
  {{ name: "logits" data_type: TYPE_FP32 dims: [ {K} ] label_filename: "labels.txt" }}
]
{instances}
{batcher}''')


def _python_models(names: dict[str, str], loaded: LoadedModel, platform: str, kind: str) -> dict[str, tuple[str, str]]:
    """Preprocessing, postprocessing and metadata: Python backend, on the CPU ({name: (io, model.py)})."""
    size, K = loaded.image_size, len(loaded.classes)
    info = json.dumps({"metadata": json.loads(loaded.metadata.to_json()), "backend": {"backend": platform, "device": kind}})
    return {
        names["pre"]: (f'''input [ {{ name: "image" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "images" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }} ]''', preprocess_source(loaded.preprocessing)),
        names["post"]: (f'''input [ {{ name: "logits" data_type: TYPE_FP32 dims: [ {K} ] }} ]
output [
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {K} ] }},
  {{ name: "labels" data_type: TYPE_STRING dims: [ 1 ] }}
]''', postprocess_source(loaded.classes, loaded.thresholds.tolist())),
        names["meta"]: ('''input [ { name: "request" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "metadata" data_type: TYPE_STRING dims: [ 1 ] } ]''', metadata_source(info)),
    }


def _write_ensemble(folder: Path, name: str, names: dict[str, str], loaded: LoadedModel, batch: int) -> None:
    """The ensemble clients call."""
    _fresh(folder)
    _write(folder / "config.pbtxt", f'''name: "{name}"
platform: "ensemble"
max_batch_size: {batch}
input [ {{ name: "image" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {len(loaded.classes)} ] }},
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
      input_map {{ key: "{loaded.metadata.input_name}" value: "preprocessed" }}
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


def preprocess_source(spec: Preprocessing | dict) -> str:
    """model.py of the preprocessing step: decode.py's functions and core.preprocess.preprocess,
    copied from this package, with the model's spec as literals."""
    from ..core import preprocess as core_preprocess

    size, mean, std, interpolation = Preprocessing.from_dict(spec).args
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
