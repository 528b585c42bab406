"""Runtime backends without a GPU: torch-free import, ONNX Runtime / PyTorch backends, batch
handling, engine sidecars and the no-TensorRT paths of build-engine, bench JSON, doctor."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlic_edge.core.errors import BackendUnavailable, ConfigError, ModelFileError
from mlic_edge.core.gpu import cuda_device_count
from tiny_model import ANIMALS as CLASSES
from tiny_model import SIZE, save_tiny_checkpoint
from torchless import TORCH_BLOCKER, blocker
from mlic_edge.runtime import ModelMetadata, open_backend, read_model_metadata
from mlic_edge.tensorrt.sidecar import (EngineInfo, check_engine_compatible, read_engine_info, same_build,
                                           sidecar_path, write_engine_info)

REPO = Path(__file__).resolve().parents[1]



def run_without_torch(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TORCH_BLOCKER + textwrap.dedent(code)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=120)


def make_onnx(path: Path, *, batch: int | None = None, attention: bool = True, precision: str = "fp32") -> Path:
    """A small hand-built ONNX model with mlic-edge metadata (no torch, instant):
    images (B, 3, 64, 64) -> logits (B, 3) = GAP(images) @ W + b ; attention (B, 3, 2, 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mlic_edge.core.onnx_metadata import set_metadata

    rng = np.random.default_rng(0)
    dim = batch if batch is not None else "batch"
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["gap"]),                      # (B, 3, 1, 1)
             helper.make_node("Flatten", ["gap"], ["flat"], axis=1),                          # (B, 3)
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])]                        # (B, K)
    inits = [numpy_helper.from_array(rng.standard_normal((3, len(CLASSES))).astype(np.float32) * 3, "W"),
             numpy_helper.from_array(np.array([0.0, 0.5, -0.5], np.float32), "b")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim, len(CLASSES)])]
    if attention:
        nodes += [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
                  helper.make_node("ReduceMean", ["pooled", "axes"], ["grey"], keepdims=1),  # (B, 1, 2, 2)
                  helper.make_node("Sigmoid", ["grey"], ["sig"]),
                  helper.make_node("Mul", ["sig", "ones"], ["attention"])]                   # (B, K, 2, 2)
        inits += [numpy_helper.from_array(np.array([1], np.int64), "axes"),
                  numpy_helper.from_array(np.ones((1, len(CLASSES), 1, 1), np.float32), "ones")]
        outputs.append(helper.make_tensor_value_info("attention", TensorProto.FLOAT, [dim, len(CLASSES), 2, 2]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                            [dim, 3, SIZE, SIZE])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    meta = ModelMetadata(classes=CLASSES, preprocess={"image_size": SIZE, "resize": "squash", "mean": [0.5] * 3,
                                                      "std": [0.5] * 3, "interpolation": "bilinear"},
                         thresholds=[0.5, 0.4, 0.6], model_config={}, precision=precision,
                         source_sha256="00" * 32,
                         output_names=[o.name for o in outputs],
                         extra={"target": "tensorrt", "batch": batch if batch else "dynamic"})
    set_metadata(model, meta)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------------- torch-free
def test_runtime_package_imports_with_numpy_alone():
    """`import mlic_edge.runtime` on a box with numpy only (Pillow, onnx and the runtimes come with
    the first image or model)."""
    heavy = ("torch", "timm", "torchvision", "PIL", "onnx", "onnxruntime", "tensorrt", "triton",
             "rich", "typer", "yaml", "matplotlib")
    code = blocker(*heavy) + ("import mlic_edge.runtime, mlic_edge.kernels.irpe_reference, mlic_edge.core.images, "
                              "mlic_edge.core.contract, mlic_edge.tensorrt.sidecar, mlic_edge.core.gpu, "
                              "mlic_edge.core.onnx_metadata, mlic_edge.core.onnxruntime, mlic_edge.core.progress, "
                              "mlic_edge.tensorrt.runtimes")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-800:]


def test_runtime_imports_and_runs_onnx_without_torch(onnx_model):
    result = run_without_torch(f"""
        import numpy as np
        import mlic_edge.runtime as rt
        from mlic_edge.runtime import open_backend
        import mlic_edge.runtime.infer, mlic_edge.runtime.bench, mlic_edge.runtime.doctor
        import mlic_edge.runtime.tensorrt_backend, mlic_edge.runtime.cuda_io, mlic_edge.export
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit('blocker failed')
        with open_backend({str(onnx_model)!r}, device="cpu") as backend:
            out = backend.predict(np.zeros((2, 3, {SIZE}, {SIZE}), np.float32))
        assert out["logits"].shape == (2, 3) and out["attention"].shape == (2, 3, 2, 2)
        assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_torch_backend_without_torch_is_a_clear_error(checkpoint):
    result = run_without_torch(f"""
        from mlic_edge.runtime import open_backend, BackendUnavailable
        try:
            open_backend({str(checkpoint)!r})
        except BackendUnavailable as e:
            print("unavailable:", e)
    """)
    assert result.returncode == 0, result.stderr
    assert "needs PyTorch" in result.stdout


# ----------------------------------------------------------------------------------- ONNX Runtime
def test_onnxruntime_backend_dynamic_batch(onnx_model):
    with open_backend(onnx_model, device="cpu") as backend:
        assert backend.kind == "onnxruntime" and backend.device == "cpu"
        assert backend.metadata.classes == CLASSES and backend.has_attention
        assert backend.batch_range is None
        x = images(5)
        out = backend.predict(x)
        assert out["logits"].shape == (5, 3) and out["logits"].dtype == np.float32
        single = np.concatenate([backend.predict(x[i:i + 1])["logits"] for i in range(5)])
        np.testing.assert_allclose(out["logits"], single, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
            backend.predict(np.zeros((1, 3, 32, 32), np.float32))


def test_onnxruntime_spinning_is_an_option(onnx_model):
    """spin=False (what `serve` opens ONNX models with) turns ONNX Runtime's busy-waiting off and
    gives the same scores; the default leaves its setting alone."""
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with open_backend(onnx_model, device="cpu", spin=False) as quiet, open_backend(onnx_model, device="cpu") as default:
        entry = "session.intra_op.allow_spinning"
        assert quiet.session.get_session_options().get_session_config_entry(entry) == "0"
        with pytest.raises(RuntimeError, match="does not have configuration"):
            default.session.get_session_options().get_session_config_entry(entry)
        np.testing.assert_array_equal(quiet.predict(x)["logits"], default.predict(x)["logits"])


def test_static_batch_graph_is_padded_and_split(tmp_path, onnx_model):
    static = make_onnx(tmp_path / "static.onnx", batch=2)
    x = images(5, seed=1)
    with open_backend(static, device="cpu") as backend, open_backend(onnx_model, device="cpu") as dynamic:
        assert backend.batch_range == (2, 2)
        out = backend.predict(x)                       # 5 images -> chunks 2, 2, 1 (+1 zero pad)
        assert out["logits"].shape == (5, 3) and out["attention"].shape == (5, 3, 2, 2)
        np.testing.assert_allclose(out["logits"], dynamic.predict(x)["logits"], rtol=1e-5, atol=1e-6)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="unknown model file type"):
        open_backend(tmp_path / "model.tflite")
    with pytest.raises(ModelFileError, match="no such model file"):
        open_backend(tmp_path / "missing.onnx")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelFileError):
        open_backend(bogus)


def test_onnx_cuda_request_without_gpu_is_refused(onnx_model):
    from mlic_edge.core.gpu import cuda_device_count
    if cuda_device_count():
        pytest.skip("a GPU is visible")
    with pytest.raises(BackendUnavailable):
        open_backend(onnx_model, device="cuda")


def test_devices_are_checked_against_the_capability_table(tmp_path, onnx_model):
    """A malformed device is the device parser's ConfigError; a device kind that does not apply to
    the file's format (capabilities.DEVICE_KINDS) is refused before any runtime is imported."""
    with pytest.raises(ConfigError, match="'cuda:x': unknown device"):
        open_backend(onnx_model, device="cuda:x")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\0")
    for device in ("cpu", "tensorrt"):
        with pytest.raises(BackendUnavailable, match=f"device '{device}' .* does not run engine files; "
                                                     f"they run on auto, cuda"):
            open_backend(engine, device=device)


def test_a_gpu_provider_that_cannot_load_is_named_before_the_session():
    """onnxruntime-gpu lists CUDA/TensorRT providers whether or not their libraries load; the
    reason is found without ONNX Runtime logging its own error."""
    from mlic_edge.core.gpu import cuda_device_count
    from mlic_edge.core.onnxruntime import CPU, CUDA, provider_problem, providers_for

    assert provider_problem(CPU) is None
    assert providers_for("cpu", [CPU, CUDA]) == [CPU]
    if cuda_device_count():
        pytest.skip("a GPU is visible")
    assert providers_for("auto", [CPU, CUDA]) == [CPU]
    with pytest.raises(BackendUnavailable, match="device cuda:1: no CUDA GPU is visible here"):
        providers_for("cuda:1", [CPU, CUDA])


def test_loaded_model_checks_the_metadata_once(onnx_model):
    from mlic_edge.runtime import LoadedModel, Preprocessing

    meta = read_model_metadata(onnx_model)
    loaded = LoadedModel.from_metadata(meta, "m.onnx")
    assert loaded.classes == CLASSES and loaded.image_size == SIZE
    assert loaded.preprocessing == Preprocessing.from_dict(loaded.preprocessing.to_dict())
    scores = np.array([0.9, 0.45, 0.2])
    np.testing.assert_array_equal(loaded.limits(), loaded.thresholds)
    assert loaded.labels_above(scores, loaded.limits(0.3)) == ["cat", "dog"]
    prediction = loaded.scored("a.jpg", scores, loaded.limits(0.5))
    assert prediction.labels == ["cat"] and prediction.scores == {"cat": 0.9, "dog": 0.45, "car": 0.2}
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        loaded.limits(1.5)
    good = dict(meta.preprocess)
    for bad, problem in (({"mean": [0.5] * 3}, "needs image_size"), ({"resize": "crop"}, "only 'squash'"),
                         ({"interpolation": "cubic"}, "interpolation"), ({"std": [1, 0, 1]}, "invalid")):
        meta.preprocess = bad if problem == "needs image_size" else {**good, **bad}
        with pytest.raises(ModelFileError, match=f"^m.onnx: preprocess .*{problem}") as error:
            LoadedModel.from_metadata(meta, "m.onnx")
        assert "\n" not in str(error.value)
    meta.preprocess, meta.thresholds = Preprocessing(SIZE, (0.5,) * 3, (0.25,) * 3).to_dict(), [0.5]
    with pytest.raises(ModelFileError, match="m.onnx: 1 thresholds for 3 classes"):
        LoadedModel.from_metadata(meta, "m.onnx")


# ----------------------------------------------------------------------------------- PyTorch
def test_torch_backend_matches_the_model(checkpoint):
    import torch

    from mlic_edge.checkpoint import load_model

    model, _ = load_model(checkpoint)
    x = images(3)
    with open_backend(checkpoint, device="cpu") as backend:
        assert backend.kind == "torch" and backend.has_attention and backend.precision == "fp32"
        out = backend.predict(x)
    with torch.no_grad():
        logits, attention = model.forward_with_attention(torch.from_numpy(x))
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-5, atol=1e-6)
    assert out["attention"].shape == (3, 3, 2, 2)
    np.testing.assert_allclose(out["attention"].sum(axis=(2, 3)), 1.0, rtol=1e-4)
    assert read_model_metadata(checkpoint).classes == CLASSES


# ----------------------------------------------------------------------------------- engines
def _info(meta: ModelMetadata, **kw) -> EngineInfo:
    base = dict(metadata=meta, runtime="tensorrt", runtime_version="11.4.0.106", compute_capabilities=["9.0"],
                gpu={"name": "NVIDIA H100", "compute_capability": "9.0"},
                onnx_sha256="ab" * 32, precision="fp16", profile={"min": 1, "opt": 8, "max": 32},
                onnx_path="m.fp16.onnx")
    return EngineInfo(**{**base, **kw})


def test_engine_sidecar_roundtrip_key_and_compatibility(tmp_path, onnx_model):
    meta = read_model_metadata(onnx_model)
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"\0")
    info = _info(meta, build={"workspace_gb": 4})
    assert write_engine_info(engine, info) == sidecar_path(engine) == tmp_path / "m.fp16.engine.json"
    back = read_engine_info(engine)
    assert back.metadata == meta and back.build == {"workspace_gb": 4} and same_build(back, info)
    assert read_model_metadata(engine).classes == CLASSES  # metadata without TensorRT
    for change in ({"runtime_version": "10.9.0"}, {"precision": "int8"}, {"onnx_sha256": "cd" * 32},
                   {"profile": {"min": 1, "opt": 4, "max": 16}}, {"gpu": {"name": "A10", "compute_capability": "8.6"}},
                   {"runtime": "tensorrt-rtx"}, {"compute_capabilities": ["8.6"]}):
        assert not same_build(back, _info(meta, **change)), change
    check_engine_compatible(info, engine, "11.4.0.106", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    with pytest.raises(BackendUnavailable, match="built with TensorRT 11.4.0.106.*this machine has TensorRT 10.9"):
        check_engine_compatible(info, engine, "10.9.0", {"name": "NVIDIA H100", "compute_capability": "9.0"})
    with pytest.raises(BackendUnavailable, match="compute capability 8.6"):
        check_engine_compatible(info, engine, "11.4.0.106", {"name": "A10", "compute_capability": "8.6"})
    with pytest.raises(BackendUnavailable, match="need a CUDA GPU"):
        check_engine_compatible(info, engine, "11.4.0.106", None)


def test_engine_without_sidecar_or_tensorrt(tmp_path, onnx_model):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    with pytest.raises(ModelFileError, match="no sidecar"):
        open_backend(engine)
    if tensorrt_importable():
        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot be checked")
    write_engine_info(engine, _info(read_model_metadata(onnx_model)))
    with pytest.raises(BackendUnavailable, match=r"pip install 'mlic-edge\[trt\]'"):
        open_backend(engine)


def test_parse_batch_profile():
    from mlic_edge.export import parse_batch_profile

    assert parse_batch_profile("1:8:32") == (1, 8, 32)
    assert parse_batch_profile("4") == (4, 4, 4)
    for bad in ("0:1:2", "8:4:16", "a:b", "1:2"):
        with pytest.raises(ConfigError):
            parse_batch_profile(bad)


def test_build_engine_without_tensorrt_stops_after_the_onnx(tmp_path, onnx_model):
    if tensorrt_importable():
        pytest.skip("TensorRT is installed here")
    out = tmp_path / "model.engine"
    result = subprocess.run([sys.executable, "-m", "mlic_edge", "build-engine", str(onnx_model), "--out", str(out),
                             "--runtime", "tensorrt"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message  # one line, no traceback
    assert "pip install 'mlic-edge[trt]'" in message and str(onnx_model) in message
    assert not out.exists()


def test_build_engine_refuses_cpu_int8_graphs(tmp_path):
    from mlic_edge.export import build_engine

    cpu_graph = make_onnx(tmp_path / "m.int8.onnx", precision="int8-cpu")
    with pytest.raises(ModelFileError, match="--target tensorrt"):
        build_engine(cpu_graph)


# ----------------------------------------------------------------------------------- bench, doctor
def test_bench_json_has_the_documented_keys(tmp_path, onnx_model, checkpoint):
    from mlic_edge.runtime import bench

    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "mlic_edge", "bench", "--model", str(onnx_model),
                             "--reference", str(checkpoint), "--batch-sizes", "1,3", "--warmup", "1", "--repeats", "3",
                             "--device", "cpu", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(bench.BENCH_JSON_KEYS) <= set(report)
    for key in bench.BENCH_JSON_KEYS:  # every key is documented in the module docstring and --help
        assert f'"{key}"' in bench.__doc__, key
    assert report["format"] == bench.BENCH_FORMAT and report["timer"] == "perf_counter"
    assert report["baseline"]["backend"] == "torch" and report["baseline"]["model"] == str(checkpoint)
    assert [r["batch"] for r in report["results"]] == [1, 3]
    for row in report["results"]:
        assert set(bench.RESULT_KEYS) <= set(row)
        for stats in (row["model"], row["baseline"]):
            assert set(bench.STATS_KEYS) <= set(stats)
            latency = stats["latency_ms"]
            assert set(bench.LATENCY_KEYS) <= set(latency)
            assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
            assert stats["throughput_ips"] > 0
        # the figures and ratios, recomputed here from the raw timings of the timed calls
        model_ms, baseline_ms = row["model"]["samples_ms"], row["baseline"]["samples_ms"]
        assert len(model_ms) == len(baseline_ms) == 3
        for stats, samples in ((row["model"], model_ms), (row["baseline"], baseline_ms)):
            assert stats["latency_ms"]["p50"] == pytest.approx(statistics.median(samples))
            assert (stats["latency_ms"]["min"], stats["latency_ms"]["max"]) == (min(samples), max(samples))
            assert stats["throughput_ips"] == pytest.approx(row["batch"] * len(samples) / (sum(samples) / 1000))
        assert row["speedup_p50"] == pytest.approx(statistics.median(baseline_ms) / statistics.median(model_ms))
        assert row["throughput_ratio"] == pytest.approx(sum(baseline_ms) / sum(model_ms))   # same batch, same calls
        assert row["model"] != row["baseline"]                    # two measurements, not one reused
    assert any("sha256 differs" in note for note in report["notes"])  # hand-made ONNX, other weights


def test_bench_no_baseline_and_a_baseline_known_to_be_slower(checkpoint, onnx_model, monkeypatch):
    """No baseline: no ratios. A PyTorch baseline made 30 ms slower per call (the tiny ONNX graph
    takes about a millisecond): the model must come out faster by about that much, which a ratio
    turned upside down, or a baseline that reuses the model's own timings, does not give."""
    import time

    from mlic_edge.runtime.bench import run_bench
    from mlic_edge.runtime.torch_backend import TorchBackend

    report = run_bench(onnx_model, batches=[2], warmup=0, repeats=2, baseline=False, device="cpu")
    assert report["baseline"] is None and report["results"][0]["speedup_p50"] is None
    real = TorchBackend._run

    def slow(self, images):
        time.sleep(0.03)
        return real(self, images)
    monkeypatch.setattr(TorchBackend, "_run", slow)
    row = run_bench(onnx_model, batches=[1], warmup=1, repeats=3, reference=checkpoint, device="cpu")["results"][0]
    assert row["baseline"]["latency_ms"]["min"] >= 30 > row["model"]["latency_ms"]["p50"]
    assert row["speedup_p50"] > 1 and row["throughput_ratio"] > 1
    # a checkpoint benchmarked on its own is its own baseline: one measurement, ratios 1 by definition
    report = run_bench(checkpoint, batches=[1], warmup=0, repeats=2, device="cpu")
    assert report["backend"] == "torch" and report["baseline"]["model"] == str(checkpoint)


def test_doctor_reports_versions_and_the_capability_table(tmp_path):
    out = tmp_path / "doctor.json"
    result = subprocess.run([sys.executable, "-m", "mlic_edge", "doctor", "--json", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in ("python", "packages", "torch", "onnxruntime", "tensorrt", "tensorrt_rtx", "gpus", "cuda_driver",
                "formats", "runtimes", "providers", "devices", "precisions"):
        assert key in report
    assert "providers" in report["onnxruntime"]
    from mlic_edge.core.capabilities import DEVICE_KINDS, ENGINE_RUNTIMES, MODEL_FORMATS, PRECISIONS

    # every row comes from the capability table, in its order
    assert [row["format"] for row in report["formats"]] == list(MODEL_FORMATS)
    assert [row["runtime"] for row in report["runtimes"]] == list(ENGINE_RUNTIMES)
    assert [row["device"].split(":")[0] for row in report["devices"]] == list(DEVICE_KINDS)
    assert [row["precision"] for row in report["precisions"]] == list(PRECISIONS)
    assert report["formats"][0]["devices"] == [d for d, k in DEVICE_KINDS.items() if "onnx" in k.formats]
    # each provider of this onnxruntime build: loads here, or says why not
    assert [row["provider"] for row in report["providers"]] == report["onnxruntime"]["providers"]
    for row in report["providers"]:
        assert row["loads"] == (row["why"] == "")
    cpu = next(row for row in report["providers"] if row["provider"] == "CPUExecutionProvider")
    assert cpu["loads"]
    # TensorRT for RTX (the dev extra installs it) builds without a GPU, runs engines only on a GPU
    # of the compute capabilities its documentation lists, and refuses the plugin with a reason
    rtx = report["tensorrt_rtx"]
    assert "error" not in rtx, f"tensorrt_rtx does not load (pip install 'mlic-edge[rtx]'): {rtx.get('error')}"
    assert "PREFER_AOT_PYTHON_PLUGINS" in rtx["irpe_plugin"]
    import torch
    here = {"{}.{}".format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())}
    row = next(row for row in report["runtimes"] if row["runtime"] == "tensorrt-rtx")
    assert row["installed"] and row["builds"]
    assert row["runs"] == bool(here & {"7.5", "8.0", "8.6", "8.9", "12.0", "12.1"})
    if not here:
        assert not row["runs"] and row["note"] == "no CUDA GPU; builds without one"
    assert report["formats"][0]["ok"]
    assert "onnxruntime" in result.stdout and "tensorrt" in result.stdout


def test_doctor_names_why_the_cuda_provider_does_not_load_without_a_library_dump(tmp_path):
    """Where ONNX Runtime's CUDA provider cannot run (here: no CUDA 12 libraries, no GPU), doctor's
    row names the reason, and nothing comes before it: no ONNX Runtime error log on stderr, no
    "Failed to load ..." lines of the CUDA library preloader on stdout."""
    out = tmp_path / "doctor.json"
    result = subprocess.run([sys.executable, "-m", "mlic_edge", "doctor", "--json", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {row["provider"]: row for row in json.loads(out.read_text())["providers"]}
    if "CUDAExecutionProvider" not in rows:
        pytest.skip("this onnxruntime build has no CUDA provider (the CPU wheel)")
    cuda = rows["CUDAExecutionProvider"]
    if cuda["loads"]:
        pytest.skip("the CUDA provider loads here (a GPU with its CUDA 12 libraries)")
    named = ("libonnxruntime_providers_cuda.so does not load (lib", "no CUDA GPU is visible")
    assert any(reason in cuda["why"] for reason in named), cuda
    assert result.stderr == ""
    assert result.stdout.splitlines()[0] == "mlic-edge doctor", result.stdout[:500]
    assert "Failed to load" not in result.stdout and "onnxruntime.ai/docs/install" not in result.stdout


@pytest.mark.skipif(not cuda_device_count(), reason="needs a CUDA GPU (and the export extra's CUDA 12 libraries)")
def test_onnx_runtime_cuda_session_runs_on_the_gpu(tmp_path):
    """With the export extra installed, ONNX Runtime's CUDA provider loads (its CUDA 12 libraries
    preloaded beside torch's CUDA 13 ones) and a session runs on it, not on the CPU fallback."""
    from mlic_edge.core.onnxruntime import CPU, CUDA, make_session, provider_problem, providers_for

    assert provider_problem(CUDA) is None
    model = make_onnx(tmp_path / "m.onnx")
    session = make_session(model, providers_for("cuda:0", [CUDA, CPU]))
    assert session.get_providers()[0] == CUDA
    logits = session.run(["logits"], {"images": np.zeros((2, 3, SIZE, SIZE), np.float32)})[0]
    assert logits.shape == (2, len(CLASSES)) and np.isfinite(logits).all()


def test_serve_says_what_to_install_not_which_script_to_run(onnx_model):
    """A pip user has no scripts/ folder: serve's help, and its error where PyTriton is missing
    (blocked here), name the extra to install."""
    install = 'pip install "mlic-edge[serve]"'
    result = subprocess.run([sys.executable, "-m", "mlic_edge", "serve", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0 and install in result.stdout and "scripts/" not in result.stdout
    code = blocker("pytriton") + (f"from mlic_edge.cli import main\n"
                                  f"main(['serve', {str(onnx_model)!r}, '--device', 'cpu'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: mlic-edge serve needs PyTriton: {install}"]


def test_build_engine_converts_an_fp32_onnx_before_needing_tensorrt(tmp_path):
    """--fp16 on an fp32 ONNX writes model.fp16.onnx (Model Optimizer AutoCast) first; without
    TensorRT the build then stops, naming that file."""
    pytest.importorskip("modelopt.onnx")
    if tensorrt_importable():
        pytest.skip("TensorRT is installed here")
    from mlic_edge.export import build_engine

    source = make_onnx(tmp_path / "model.onnx")
    with pytest.raises(BackendUnavailable, match=r"fp16 ONNX graph ready at .*model\.fp16\.onnx"):
        build_engine(source, precision="fp16", runtime="tensorrt")
    fp16 = tmp_path / "model.fp16.onnx"
    meta = read_model_metadata(fp16)
    assert meta.precision == "fp16" and meta.classes == CLASSES and meta.extra["converted_from"] == str(source)
    x = images(4)
    with open_backend(source, device="cpu") as a, open_backend(fp16, device="cpu") as b:
        np.testing.assert_allclose(b.predict(x)["logits"], a.predict(x)["logits"], atol=0.05)
    with pytest.raises(ModelFileError, match="needs the fp32 ONNX"):
        build_engine(fp16, precision="int8")
