"""TensorRT on a real GPU: engines built from a tiny model vs ONNX Runtime on the same graphs.

Runs with TensorRT 10/11, or with TensorRT for RTX on a GPU it supports (`run_runtime`);
skipped (with the reason) elsewhere: no CI machine here has a GPU. Engine builds without a GPU
are tested in tests/test_engine_build.py. `scripts/gpu_selfcheck.sh` runs this file plus the CLI path on a GPU machine. The device
buffer / CUDA-graph layer the engine backend uses (`cuda_io`) needs only a CUDA GPU and is tested
on its own first, with a plain CUDA copy as the captured work (no TensorRT involved).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytestmark = pytest.mark.gpu
needs_tensorrt = pytest.mark.tensorrt   # the tests on engines (workdir/engines: skipped, with the reason, without it)

from tiny_model import ANIMALS as CLASSES  # noqa: E402
from tiny_model import SIZE  # noqa: E402
# |delta mAP| limits (mAP points) of an engine vs ONNX Runtime on the very graph it was built from,
# and max |delta logit| relative to the logits' scale (fp16 rounding; int8 Q/DQ emulation on the CPU
# vs fused INT8 kernels).
MAP_LIMITS = {"fp16": 0.1, "int8": 1.0}
LOGIT_LIMITS = {"fp16": 0.02, "int8": 0.25}


def gpu_count() -> int:
    from mlic_edge.core.gpu import cuda_device_count
    return cuda_device_count()


def run_runtime():
    """(runtime that can build and run engines on this machine's GPU 0, None) or (None, why not)."""
    from mlic_edge.core.gpu import gpu_info
    from mlic_edge.tensorrt.runtimes import import_runtime

    gpu = gpu_info(0)
    if gpu is None:
        return None, "no CUDA GPU"
    reasons = []
    for name in ("tensorrt", "tensorrt-rtx"):
        try:
            runtime = import_runtime(name)
        except Exception as e:
            reasons.append(f"{name} not importable ({type(e).__name__}: {str(e)[:80]})")
            continue
        if runtime.is_rtx and gpu["compute_capability"] not in runtime.capability.runs_on:
            reasons.append(f"TensorRT for RTX does not support {gpu['name']} (compute capability "
                           f"{gpu['compute_capability']})")
            continue
        return runtime, None
    return None, "; ".join(reasons)


def tensorrt_reason() -> str | None:
    return run_runtime()[1]


def runtime_name() -> str:
    return run_runtime()[0].name


needs_gpu = pytest.mark.skipif(gpu_count() == 0, reason="no CUDA GPU")


# ----------------------------------------------------------------------------------- device IO
@needs_gpu
@pytest.mark.parametrize("kind", ["torch", "cudart"])
def test_device_io_copies_and_replays_cuda_graphs(kind):
    cudart = pytest.importorskip("cuda.bindings.runtime")
    if kind == "torch":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("torch without CUDA")
    from mlic_edge.runtime.cuda_io import make_device_io

    io = make_device_io(kind)
    try:
        src = io.alloc((4, 8), np.float32)                                   # (4, 8)
        dst = io.alloc((4, 8), np.float32)

        def launch(stream: int) -> None:  # the captured work: dst <- src on our stream
            err, = cudart.cudaMemcpyAsync(dst.ptr, src.ptr, src.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                          cudart.cudaStream_t(stream))
            assert err == cudart.cudaError_t.cudaSuccess

        first = np.arange(32, dtype=np.float32).reshape(4, 8)
        io.upload(src, first)
        launch(io.stream_handle)
        fetch = io.download(dst, (4, 8))
        io.synchronize()
        np.testing.assert_array_equal(fetch(), first)

        replay = io.capture(launch)
        second = -first
        io.upload(src, second)
        timer = io.event_timer()
        timer.start()
        replay()                      # the graph re-reads src: the new data must come through
        elapsed = timer.stop()
        fetch = io.download(dst, (2, 8))                                     # first rows only
        io.synchronize()
        np.testing.assert_array_equal(fetch(), second[:2])
        assert elapsed >= 0.0
    finally:
        io.close()


# ----------------------------------------------------------------------------------- engines
def _picture(rng: np.random.Generator) -> Image.Image:
    """A synthetic scene (coloured shapes on a gradient), more image-like than noise."""
    base = np.linspace(0, 255, 96, dtype=np.float32)
    array = np.stack([np.add.outer(base, base * rng.uniform(0, 1)) % 256 for _ in range(3)], -1)
    image = Image.fromarray(array.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.integers(0, 70, 2)
        draw.ellipse((x, y, x + rng.integers(10, 40), y + rng.integers(10, 40)),
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if tensorrt_reason() is not None:
        pytest.skip(tensorrt_reason())
    import torch

    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.config import ModelConfig
    from mlic_edge.model import build_model

    root = tmp_path_factory.mktemp("trt")
    cfg = ModelConfig(num_classes=len(CLASSES), backbone="test_resnet", pretrained="none", image_size=SIZE,
                      d_model=32, nhead=4, dim_feedforward=64)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    save_checkpoint(root / "tiny.pt", {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES,
                                       "preprocess": model.data_config(), "thresholds": [0.5] * 3})
    rng = np.random.default_rng(0)
    for folder, count in (("calib", 64), ("images", 48)):
        (root / folder).mkdir()
        for i in range(count):
            _picture(rng).save(root / folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def engines(workdir):
    from mlic_edge.export import build_engine
    from mlic_edge.export import MissingDependencyError

    built = {}
    try:
        built["fp16"] = build_engine(workdir / "tiny.pt", workdir / "tiny.fp16.engine", precision="fp16",
                                     batch="1:4:8", with_attention=True, timing_cache=workdir / "timing.cache",
                                     runtime=runtime_name())
        built["int8"] = build_engine(workdir / "tiny.pt", workdir / "tiny.int8.engine", precision="int8",
                                     calib=str(workdir / "calib"), calib_images=64, batch="1:4:8",
                                     timing_cache=workdir / "timing.cache", runtime=runtime_name())
    except MissingDependencyError as e:
        pytest.skip(f"export dependencies missing: {e}")
    return built


def _images(workdir: Path) -> np.ndarray:
    from mlic_edge.runtime import preprocess_batch
    from mlic_edge.core.onnx_metadata import read_metadata

    spec = read_metadata(workdir / "tiny.fp16.onnx").preprocess
    files = sorted((workdir / "images").glob("*.png"))
    return preprocess_batch(files, spec["image_size"], spec["mean"], spec["std"], spec["interpolation"])


@needs_tensorrt
def test_sidecar_records_the_build(engines):
    from mlic_edge.core.files import file_sha256 as _sha256
    from mlic_edge.runtime import read_engine_info

    runtime = run_runtime()[0]
    for precision, result in engines.items():
        assert not result.reused_engine and result.engine.is_file()
        info = read_engine_info(result.engine)
        assert info.runtime == runtime.name and info.runtime_version == runtime.version
        assert info.precision == precision
        assert info.profile == {"min": 1, "opt": 4, "max": 8}
        assert info.onnx_sha256 == _sha256(result.onnx) and info.gpu["compute_capability"]
        assert info.metadata.classes == CLASSES and info.build["strongly_typed"]
        if runtime.uses_timing_cache:
            assert Path(info.build["timing_cache"]).is_file()


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_matches_onnxruntime_on_the_same_graph(engines, workdir, precision):
    from mlic_edge.checkpoint import load_model
    from mlic_edge.parity import compare_logits
    from mlic_edge.runtime import open_backend
    from mlic_edge.metrics import sigmoid

    x = _images(workdir)                                                       # (48, 3, 64, 64)
    result = engines[precision]
    with open_backend(result.onnx, device="cpu") as ort_backend:
        ort_logits = ort_backend.predict(x)["logits"]
    with open_backend(result.engine) as engine:
        assert engine.kind == "tensorrt" and engine.precision == precision
        trt_logits = engine.predict(x)["logits"]                               # chunks of <= 8
        if engine.runtime.is_rtx:  # the JIT kernels of this GPU are cached next to the engine
            assert engine.runtime_cache_file.is_file() and engine.runtime_cache_file.stat().st_size > 0
    import torch
    model, _ = load_model(workdir / "tiny.pt")
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    targets = (sigmoid(reference) >= 0.5).astype(np.float32)                   # fp32 decisions
    if targets.sum() == 0 or targets.sum() == targets.size:
        targets = (sigmoid(reference) >= np.median(sigmoid(reference), axis=0)).astype(np.float32)
    row = compare_logits(ort_logits, trt_logits, targets, precision, MAP_LIMITS)
    scale = max(1.0, float(np.abs(ort_logits).max()))
    assert abs(row.delta_map) <= MAP_LIMITS[precision], row
    assert row.max_abs_logit_error <= LOGIT_LIMITS[precision] * scale, row


@needs_tensorrt
def test_cuda_graph_replay_batches_and_io_kinds_agree(engines, workdir):
    from mlic_edge.runtime import open_backend

    x = _images(workdir)[:11]
    engine_path = engines["fp16"].engine
    with open_backend(engine_path, cuda_graph=False) as eager:
        expected = eager.predict(x)                          # 11 > profile max 8: split 8 + 3
        assert expected["logits"].shape == (11, 3) and expected["attention"].shape == (11, 3, 2, 2)
    for io in ("torch", "cudart"):
        with open_backend(engine_path, io=io) as graphed:
            for _ in range(3):                               # capture, then replay
                out = graphed.predict(x[:4])
                np.testing.assert_allclose(out["logits"], expected["logits"][:4], rtol=1e-3, atol=1e-3)
            assert graphed.describe()["cuda_graph"]
            np.testing.assert_allclose(graphed.predict(x)["logits"], expected["logits"], rtol=1e-3, atol=1e-3)


@needs_tensorrt
def test_matching_engine_is_reused_and_foreign_engine_refused(engines, workdir, tmp_path):
    from mlic_edge.export import build_engine
    from mlic_edge.core.errors import BackendUnavailable
    from mlic_edge.runtime import open_backend
    from mlic_edge.tensorrt.sidecar import sidecar_path

    again = build_engine(workdir / "tiny.pt", workdir / "tiny.fp16.engine", precision="fp16", batch="1:4:8",
                         with_attention=True, timing_cache=workdir / "timing.cache", runtime=runtime_name())
    assert again.reused_engine and again.reused_onnx
    foreign = tmp_path / "foreign.engine"
    shutil.copy(engines["fp16"].engine, foreign)
    data = json.loads(sidecar_path(engines["fp16"].engine).read_text())
    data["runtime_version"] = "9.0.0"
    sidecar_path(foreign).write_text(json.dumps(data))
    with pytest.raises(BackendUnavailable, match="rebuild"):
        open_backend(foreign)


@needs_tensorrt
def test_parity_and_cli_run_engines(engines, workdir):
    from mlic_edge.parity import run_parity
    from mlic_edge.runtime.bench import run_bench
    from mlic_edge.runtime.infer import run_inference

    row, = run_parity(workdir / "tiny.pt", [engines["fp16"].engine], images=_images(workdir)).rows
    assert row.precision == "fp16" and np.isfinite(row.max_abs_logit_error)
    summary = run_inference(workdir / "images", engines["fp16"].engine, workdir / "preds.csv",
                            save_attention=workdir / "maps", threshold=0.0, progress=False)
    assert summary.processed == 48 and summary.attention_images == 48 * 3
    report = run_bench(engines["fp16"].engine, batches=[1, 8], warmup=2, repeats=5)
    assert report["timer"] == "cuda_events" and report["baseline"]["device"].startswith("cuda")
    assert all(r["speedup_p50"] > 0 for r in report["results"])


# ----------------------------------------------------------------------------- IRPEAttention plugin
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_irpe_plugin_engine_matches_the_lowered_engine(workdir, precision):
    """The same checkpoint built twice: iRPE lowered to standard ops, and with the fused
    IRPEAttention plugin (AOT PTX kernel). Both engines must agree, and the plugin engine must
    agree with its own graph on ONNX Runtime (reference op)."""
    pytest.importorskip("onnxruntime_extensions")
    pytest.importorskip("triton")
    if run_runtime()[0].plugin_support():
        pytest.skip(run_runtime()[0].plugin_support())
    import torch

    from mlic_edge.checkpoint import load_model, save_checkpoint
    from mlic_edge.export import build_engine
    from mlic_edge.runtime import open_backend, preprocess_batch

    model, ckpt = load_model(workdir / "tiny.pt")
    with torch.no_grad():  # non-zero iRPE tables (the model starts them at zero)
        for name, p in model.named_parameters():
            if ".irpe." in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    source = workdir / "tiny_irpe.pt"
    save_checkpoint(source, {**ckpt, "model": model.state_dict()})
    common = dict(precision=precision, batch="1:4:8", timing_cache=workdir / "timing.cache",
                  runtime=runtime_name())
    lowered = build_engine(source, workdir / f"lowered.{precision}.engine", **common)
    plugin = build_engine(source, workdir / f"plugin.{precision}.engine", irpe_plugin=True, **common)
    assert plugin.info.build["plugins"] and not lowered.info.build["plugins"]

    spec = plugin.info.metadata.preprocess
    files = sorted((workdir / "images").glob("*.png"))[:16]
    x = preprocess_batch(files, spec["image_size"], spec["mean"], spec["std"], spec["interpolation"])
    outputs = {}
    for name, result in (("lowered", lowered), ("plugin", plugin)):
        with open_backend(result.engine) as engine:
            outputs[name] = engine.predict(x)["logits"]
    with open_backend(plugin.onnx, device="cpu") as reference:
        outputs["reference op"] = reference.predict(x)["logits"]
    scale = float(np.abs(outputs["lowered"]).max())
    limit = {"fp32": 2e-3, "fp16": 2e-2}[precision]          # TF32 / FP16 kernels on both sides
    assert np.abs(outputs["plugin"] - outputs["lowered"]).max() <= limit * scale
    assert np.abs(outputs["plugin"] - outputs["reference op"]).max() <= limit * scale
