"""`mlic-edge export-triton`: every config.pbtxt parses against Triton's schema, the ensemble is
wired, and the generated Python-backend models (run here against a stand-in for
`triton_python_backend_utils` that only carries tensors) give the local Tagger's scores and labels."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tritonclient.grpc import model_config_pb2  # noqa: E402  (Triton's config schema; the serve extra)


def _parse(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


class _Tensor:
    def __init__(self, name, value):
        self.name, self.value = name, np.asarray(value)

    def as_numpy(self):
        return self.value


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.value for t in output_tensors}
        self.error = error


class _Request:
    def __init__(self, **inputs):
        self.inputs = {k: _Tensor(k, v) for k, v in inputs.items()}


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = lambda message: message
    module.get_input_tensor_by_name = lambda request, name: request.inputs[name]
    return module


def _load_model(path: Path):
    sys.modules["triton_python_backend_utils"] = _stand_in()
    try:
        spec = importlib.util.spec_from_file_location(f"generated_{path.parent.parent.name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("triton_python_backend_utils", None)
    return module.TritonPythonModel()


def test_export_triton_repository(trained, tmp_path):
    import mlic_edge
    from mlic_edge.runtime import open_backend
    from mlic_edge.serve.repository import export_repository

    repo = tmp_path / "repo"
    names = export_repository(trained["fp32"], repo, name="tiny", max_batch=4)
    assert names[0] == "tiny"
    configs = {name: _parse(repo / name / "config.pbtxt") for name in names}
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 4
    model = configs["tiny_model"]
    assert model.platform == "onnxruntime_onnx" and (repo / "tiny_model" / "1" / "model.onnx").is_file()
    assert model.output[0].label_filename == "labels.txt" and model.HasField("dynamic_batching")
    with mlic_edge.load(trained["fp32"]) as tagger:
        assert (repo / "tiny_model" / "labels.txt").read_text().split() == tagger.classes
        assert list(model.output[0].dims) == [len(tagger.classes)]
        assert list(model.input[0].dims) == [3, tagger.image_size, tagger.image_size]

    # the ensemble: every step's input is an ensemble input or an earlier step's output, each
    # step's map keys are that model's tensors, and the ensemble's outputs are produced
    ensemble = configs["tiny"]
    assert ensemble.platform == "ensemble"
    available = {i.name for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        step_config = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in step_config.input}
        assert set(step.output_map) <= {o.name for o in step_config.output}
        assert set(step.input_map.values()) <= available, step.model_name
        available |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= available

    # the Python models, chained by hand around the ONNX model, against the local Tagger
    pre = _load_model(repo / "tiny_preprocess" / "1" / "model.py")
    post = _load_model(repo / "tiny_postprocess" / "1" / "model.py")
    meta = _load_model(repo / "tiny_metadata" / "1" / "model.py")
    files = sorted((trained["data_root"] / "test").glob("*.png"))[:12]
    requests = [_Request(image=np.array([[f.read_bytes()]], dtype=object)) for f in files]
    requests.insert(3, _Request(image=np.array([[b"not an image"]], dtype=object)))
    responses = pre.execute(requests)
    assert responses[3].error and "cannot decode" in responses[3].error           # that request only
    responses = responses[:3] + responses[4:]
    assert all(r.error is None for r in responses)
    images = np.concatenate([r.outputs["images"] for r in responses])              # (n, 3, S, S)
    with open_backend(trained["fp32"]) as backend:
        logits = backend.predict(images)["logits"]
    out = post.execute([_Request(logits=row[None]) for row in logits])
    with mlic_edge.load(trained["fp32"]) as tagger:
        expected = tagger.predict(files)
        for response, want in zip(out, expected):
            scores = response.outputs["scores"][0]
            np.testing.assert_allclose(scores, [want.scores[c] for c in tagger.classes], atol=2e-6)
            labels = response.outputs["labels"][0, 0].decode()
            assert (labels.split(";") if labels else []) == want.labels
    info = meta.execute([_Request(request=np.array([[b""]], dtype=object))])[0].outputs["metadata"]
    assert b'"classes"' in info[0, 0]


def test_export_triton_refuses_checkpoints(trained, tmp_path):
    from mlic_edge.core.errors import ConfigError
    from mlic_edge.serve.repository import export_repository

    with pytest.raises(ConfigError, match="export it first"):
        export_repository(trained["ckpt"], tmp_path / "repo")
