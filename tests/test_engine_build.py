"""Real engines on a machine without a GPU: TensorRT for RTX builds them, these tests assert on them.

TensorRT for RTX (`pip install 'mlic-edge[rtx]'`, part of `dev`) compiles ahead of time for a list
of compute capabilities and needs a GPU only to run the engine. So every CI run builds fp32, fp16
and int8 engines of the trained tiny model (tests/test_export.py's fixture), with a dynamic-batch
profile and a static batch, and checks what a CPU can check: the sidecar, the parsed network (I/O
names, shapes, dtypes; FP16 tensors; Q/DQ layers), reuse, and the one-line errors. Running the
engines needs a GPU: tests/test_tensorrt_gpu.py.

Also here: the engine layer's fixes that a CPU can check with stand-in objects (timing cache,
plugin API fallback, AOT plugin engines opened without the plugin, device order).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tiny_model import one_thread

# Builds with TensorRT for RTX (no GPU needed); the tests without it use stand-ins and still run.
needs_tensorrt = pytest.mark.tensorrt

from mlic_edge.core.errors import BackendUnavailable, ConfigError, ModelFileError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def rtx_module():
    try:
        import tensorrt_rtx
    except Exception as e:  # pragma: no cover - the dev extra installs it
        pytest.skip(f"TensorRT for RTX not importable: {e}")
    return tensorrt_rtx


@pytest.fixture(scope="module")
def engines(trained, tmp_path_factory):
    """fp32 / fp16 / int8 engines, dynamic batch 1:4:8, from the exported TensorRT graphs."""
    from mlic_edge.export import build_engine

    rtx_module()
    out = tmp_path_factory.mktemp("rtx-engines")
    with one_thread():
        return {precision: build_engine(trained[precision], out / f"tiny.{precision}.engine", batch="1:4:8",
                                        runtime="tensorrt-rtx")
                for precision in ("fp32", "fp16", "int8")}


# ----------------------------------------------------------------------------------- real builds
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_builds_each_precision_without_a_gpu(engines, trained, precision):
    from mlic_edge.runtime import read_engine_info
    from mlic_edge.core.files import file_sha256
    from mlic_edge.core.capabilities import ENGINE_RUNTIMES

    result = engines[precision]
    assert not result.reused_engine and result.engine.stat().st_size > 100_000
    info = read_engine_info(result.engine)                  # the sidecar, as written
    assert info.runtime == "tensorrt-rtx" and info.runtime_version == rtx_module().__version__
    assert info.compute_capabilities == list(ENGINE_RUNTIMES["tensorrt-rtx"].portable_default) and info.precision == precision
    assert info.profile == {"min": 1, "opt": 4, "max": 8} and info.onnx_sha256 == file_sha256(trained[precision])
    assert info.build["engine_bytes"] == result.engine.stat().st_size and info.build["build_seconds"] > 0
    assert info.build["timing_cache"] is None               # RTX: none (it would make the build query a GPU)
    network = info.build["network"]
    assert network["inputs"] == [{"name": "images", "shape": [-1, 3, 64, 64], "dtype": "FLOAT"}]
    assert network["outputs"] == [{"name": "logits", "shape": [-1, 6], "dtype": "FLOAT"}]
    dtypes, layers = network["tensor_dtypes"], network["layers"]
    if precision == "fp32":
        assert "HALF" not in dtypes and "INT8" not in dtypes and "QUANTIZE" not in layers
    if precision == "fp16":                                 # FP16 compute, FP32 I/O and norms
        assert dtypes["HALF"] > dtypes.get("FLOAT", 0) and "QUANTIZE" not in layers
    if precision == "int8":                                 # explicit Q/DQ, as the graph says
        assert layers["QUANTIZE"] >= 10 and layers["DEQUANTIZE"] >= layers["QUANTIZE"] and dtypes["INT8"] >= 10


@needs_tensorrt
def test_rtx_rebuild_reuses_the_cached_engine_and_targets_are_part_of_the_key(engines, trained):
    from mlic_edge.export import build_engine

    first = engines["fp16"]
    stamp = first.engine.stat().st_mtime_ns
    again = build_engine(trained["fp16"], first.engine, batch="1:4:8", runtime="tensorrt-rtx")
    assert again.reused_engine and first.engine.stat().st_mtime_ns == stamp
    assert any("reused" in note for note in again.notes)
    other = build_engine(trained["fp16"], first.engine.with_name("tiny.fp16.sm89.engine"), batch="1:4:8",
                         runtime="tensorrt-rtx", compute_capability="8.9")
    assert not other.reused_engine and other.info.compute_capabilities == ["8.9"]
    assert other.info.build["target_compute_capabilities"] == ["8.9"]


@needs_tensorrt
def test_rtx_builds_a_static_batch_graph(trained, tmp_path):
    from mlic_edge.export import build_engine, export_onnx

    with one_thread():
        static = export_onnx(trained["ckpt"], tmp_path / "static.onnx", batch=2).path
        result = build_engine(static, tmp_path / "static.engine", runtime="tensorrt-rtx")
    assert result.info.profile is None
    assert result.info.build["network"]["inputs"][0]["shape"] == [2, 3, 64, 64]
    with pytest.raises(ConfigError, match="fixed batch of 2"):
        build_engine(static, tmp_path / "other.engine", runtime="tensorrt-rtx", batch="1:4:8")


@needs_tensorrt
def test_cli_builds_an_fp16_engine_from_a_checkpoint(trained, tmp_path):
    """What a user types on a machine without a GPU: a checkpoint in, an engine and sidecar out,
    with size, build time and I/O printed."""
    rtx_module()
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(trained["ckpt"].read_bytes())
    done = subprocess.run([sys.executable, "-m", "mlic_edge", "build-engine", str(ckpt), "--precision", "fp16",
                           "--batch-profile", "1:2:4"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    engine = tmp_path / "best.fp16.engine"
    assert engine.stat().st_size > 100_000 and (tmp_path / "best.fp16.engine.json").is_file()
    assert (tmp_path / "best.fp16.onnx").is_file()
    text = " ".join(done.stdout.split())
    assert "TensorRT for RTX" in text and "MiB" in text and "build" in text
    assert "input images Bx3x64x64 FLOAT" in text and "output logits Bx6 FLOAT" in text
    sidecar = json.loads((tmp_path / "best.fp16.engine.json").read_text())
    assert sidecar["runtime"] == "tensorrt-rtx" and sidecar["precision"] == "fp16"


def _cli_build_request(monkeypatch, capsys, args: list[str]) -> tuple[dict, str]:
    """(the keywords `build-engine ARGS` calls the library with, the CLI's output); nothing is built."""
    from mlic_edge.cli import main
    from mlic_edge.export import engine

    calls = {}

    def record(source, out=None, **options):
        calls.update(options, source=source)
        raise BackendUnavailable("stub: nothing built")

    monkeypatch.setattr(engine, "build_engine", record)
    with pytest.raises(SystemExit) as exit_info:
        main(["build-engine", "model.onnx", *args])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    return calls, captured.out + captured.err


def test_cli_precision_and_batch_profile(monkeypatch, capsys):
    calls, output = _cli_build_request(monkeypatch, capsys, ["--precision", "int8", "--batch-profile", "2:4:8"])
    assert calls["precision"] == "int8" and calls["batch"] == "2:4:8" and "deprecated" not in output
    calls, _ = _cli_build_request(monkeypatch, capsys, [])
    assert calls["precision"] is None and calls["batch"] == "1:8:32"     # the source's precision


@pytest.mark.parametrize("old,new,key,value", [
    (["--fp16"], "--precision", "precision", "fp16"),
    (["--int8"], "--precision", "precision", "int8"),
    (["--batch", "1:2:4"], "--batch-profile", "batch", "1:2:4"),
])
def test_cli_deprecated_aliases_still_work_with_a_warning(monkeypatch, capsys, old, new, key, value):
    calls, output = _cli_build_request(monkeypatch, capsys, old)
    assert calls[key] == value
    assert f"warning: {old[0]} is deprecated" in output and f"use {new}" in output


def test_cli_aliases_that_disagree_are_one_line_errors(monkeypatch, capsys):
    from mlic_edge.cli import main

    for args in (["--fp16", "--precision", "int8"], ["--fp16", "--int8"], ["--batch", "2", "--batch-profile", "4"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["build-engine", "model.onnx", *args])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert exit_info.value.code == 2 and len(errors) == 1, args


@needs_tensorrt
def test_engine_steps_run_alone_up_to_the_build(trained, tmp_path):
    """choose the runtime, prepare the graph, compute the build's key: no engine is built or written."""
    from mlic_edge.core.capabilities import ENGINE_RUNTIMES
    from mlic_edge.export.engine import (
        EngineOptions,
        EngineState,
        choose_build_runtime,
        prepare_graph,
        reuse_engine,
    )

    rtx_module()
    options = EngineOptions(out=tmp_path / "m.engine", batch="1:2:4", runtime="tensorrt-rtx")
    state = EngineState(Path(trained["fp16"]))
    for step in (choose_build_runtime, prepare_graph, reuse_engine):
        step(options, state)
    assert state.runtime.name == "tensorrt-rtx" and state.onnx == Path(trained["fp16"]) and state.reused_onnx
    assert state.info.precision == "fp16" and state.info.profile == {"min": 1, "opt": 2, "max": 4}
    assert state.info.compute_capabilities == list(ENGINE_RUNTIMES["tensorrt-rtx"].portable_default)
    assert state.result is None and not list(tmp_path.iterdir())


def test_engine_options_are_checked_before_any_work(tmp_path):
    from mlic_edge.export import build_engine

    with pytest.raises(ConfigError, match="precision 'int4'"):
        build_engine(tmp_path / "missing.onnx", precision="int4")
    with pytest.raises(ConfigError, match="--batch-profile"):
        build_engine(tmp_path / "missing.onnx", batch="8:4:2")


# ----------------------------------------------------------------------------------- refusals
def test_cpu_int8_graph_is_refused_naming_the_export_to_use(trained):
    from mlic_edge.export import build_engine

    with pytest.raises(ModelFileError) as error:
        build_engine(trained["int8_cpu"], runtime="tensorrt-rtx")
    message = str(error.value)
    assert "--target cpu" in message and "mlic-edge export" in message and "--precision int8" in message
    assert "\n" not in message


def test_parser_failure_is_one_line_naming_the_node_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from mlic_edge.export.engine import build_serialized_engine
    from mlic_edge.tensorrt.runtimes import import_runtime

    node = helper.make_node("NotARealOp", ["images"], ["logits"], name="mystery_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelFileError) as error:
        build_serialized_engine(import_runtime("tensorrt-rtx"), path, "images", 8, None, workspace_gb=None,
                                timing_cache=None, optimization_level=None)
    message = str(error.value)
    assert "node mystery_node (NotARealOp)" in message and "\n" not in message


@needs_tensorrt
def test_irpe_plugin_on_rtx_is_a_one_line_error_before_any_export(trained, tmp_path):
    from mlic_edge.export import build_engine

    rtx_module()
    ckpt = tmp_path / "p.pt"
    ckpt.write_bytes(trained["ckpt"].read_bytes())
    with pytest.raises(BackendUnavailable) as error:
        build_engine(ckpt, precision="fp16", irpe_plugin=True, runtime="tensorrt-rtx")
    message = str(error.value)
    assert "TensorRT for RTX" in message and "PREFER_AOT_PYTHON_PLUGINS" in message and "\n" not in message
    assert not list(tmp_path.glob("*.onnx"))                    # refused before exporting


def test_auto_picks_rtx_without_a_gpu_and_targets_parse():
    from mlic_edge.tensorrt.runtimes import choose_runtime, parse_targets

    rtx_module()
    assert choose_runtime("auto", None).name == "tensorrt-rtx"
    assert parse_targets(None) is None and parse_targets("portable") is None
    assert parse_targets("current") == ("current",)
    assert parse_targets("sm86, 8.9,120") == ("8.6", "8.9", "12.0")
    with pytest.raises(ConfigError, match="9.0"):
        parse_targets("9.0")


# ----------------------------------------------------------------------------------- engine-layer fixes
class _Config:
    """Stand-in for IBuilderConfig's timing-cache calls, as TensorRT behaves: create_timing_cache
    returns None on a corrupt blob, and set_timing_cache(None) raises."""

    def __init__(self):
        self.set = None

    def create_timing_cache(self, data: bytes):
        return None if data.startswith(b"corrupt") else object()

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments")
        self.set = cache
        return True


def test_corrupt_timing_cache_starts_fresh_with_a_warning(tmp_path, caplog):
    from mlic_edge.export.engine import load_timing_cache

    path = tmp_path / "timing.cache"
    path.write_bytes(b"corrupt bytes")
    config = _Config()
    with caplog.at_level(logging.WARNING):
        cache, reused = load_timing_cache(config, path)
    assert cache is not None and config.set is cache and not reused
    assert "corrupt" in caplog.text
    path.write_bytes(b"good")
    assert load_timing_cache(_Config(), path)[1]


def test_plugin_api_falls_back_to_tensorrt_bindings(monkeypatch):
    """TensorRT 10.12/10.13 wheels have the plugin API only as tensorrt_bindings.plugin."""
    from mlic_edge.tensorrt.runtimes import TensorRTRuntime, import_plugin_api

    fake_trt = types.ModuleType("tensorrt")                      # no .plugin submodule
    fake_trt.__version__ = "10.13.3"
    bindings_plugin = types.ModuleType("tensorrt_bindings.plugin")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt)
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", types.ModuleType("tensorrt_bindings"))
    monkeypatch.setitem(sys.modules, "tensorrt_bindings.plugin", bindings_plugin)
    assert import_plugin_api(TensorRTRuntime("tensorrt", fake_trt)) is bindings_plugin
    monkeypatch.delitem(sys.modules, "tensorrt_bindings.plugin")
    monkeypatch.setitem(sys.modules, "tensorrt_bindings", fake_trt)
    with pytest.raises(BackendUnavailable, match=r"TensorRT >= 10\.14"):
        import_plugin_api(TensorRTRuntime("tensorrt", fake_trt))


def _engine_info(build: dict) -> "object":
    from mlic_edge.tensorrt.sidecar import EngineInfo
    from mlic_edge.core.metadata import ModelMetadata

    meta = ModelMetadata(classes=["a"], preprocess={"image_size": 64}, thresholds=[0.5], model_config={},
                         precision="fp16", extra={"irpe_plugin": True})
    return EngineInfo(metadata=meta, runtime="tensorrt", runtime_version="11.4", compute_capabilities=["8.9"],
                      gpu=None, onnx_sha256="", precision="fp16", profile=None, build=build)


def test_aot_plugin_engine_opens_without_the_plugin_api_and_on_the_asked_gpu(monkeypatch, tmp_path):
    """The AOT kernel is inside the engine: no registration (it needs tensorrt.plugin and Triton).
    And the engine's GPU is made current before the runtime exists (--device cuda:1)."""
    from mlic_edge.tensorrt import plugin as irpe_plugin
    from mlic_edge.runtime import tensorrt_backend
    from mlic_edge.tensorrt.runtimes import TensorRTRuntime

    calls = []

    def forbidden(runtime):
        calls.append("register")
        raise AssertionError("an AOT plugin engine must not need the Python plugin")

    class FakeRuntime:
        def __init__(self, logger):
            calls.append("Runtime")

        def deserialize_cuda_engine(self, data):
            calls.append("deserialize")
            return "engine"

    class FakeLogger:
        Severity = types.SimpleNamespace(WARNING=1, VERBOSE=0)

        def __init__(self, severity):
            pass

    fake_trt = types.SimpleNamespace(__version__="11.4", Runtime=FakeRuntime, Logger=FakeLogger)
    io = types.SimpleNamespace(make_current=lambda: calls.append("make_current"))
    monkeypatch.setattr(irpe_plugin, "register_irpe_plugin", forbidden)
    runtime = TensorRTRuntime("tensorrt", fake_trt)
    aot = _engine_info({"plugin_impl": "aot", "plugins": ["mlic_edge::IRPEAttention v1 (AOT PTX)"]})
    assert not tensorrt_backend.needs_python_plugin(aot)
    _, engine = tensorrt_backend.deserialize_engine(runtime, aot, b"x", io, tmp_path / "m.engine")
    assert engine == "engine" and calls == ["make_current", "Runtime", "deserialize"]
    assert tensorrt_backend.needs_python_plugin(_engine_info({"plugin_impl": "jit"}))


def test_gpu_selfcheck_installs_the_plugin_extra_and_checks_its_pytest_log():
    lines = (REPO / "scripts" / "gpu_selfcheck.sh").read_text().splitlines()
    install = next(line for line in lines if "pip install" in line and "-e" in line)
    assert "plugin" in install and "rtx" in install
    tests = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert 'tee "$WORK/pytest.log"' in lines[tests]
    assert lines[tests + 1] == 'scripts/fail_on_skips.sh "$WORK/pytest.log"'   # set -e: its exit stops the script


def test_the_skip_check_fails_on_a_real_pytest_log_with_a_skip(tmp_path):
    """scripts/fail_on_skips.sh on logs of real pytest runs: a skip (or no summary) exits 1."""
    def pytest_log(name: str, body: str) -> Path:
        (tmp_path / f"test_{name}.py").write_text(body)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                               f"test_{name}.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        (tmp_path / f"{name}.log").write_text(done.stdout)
        return tmp_path / f"{name}.log"

    def check(log: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "scripts" / "fail_on_skips.sh"), str(log)],
                              capture_output=True, text=True, timeout=60)

    passing = "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
    skipping = "import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip('no GPU')\n"
    assert check(pytest_log("passing", passing)).returncode == 0
    skipped = check(pytest_log("skipping", skipping))
    assert skipped.returncode == 1 and "1 skipped" in skipped.stderr
    (tmp_path / "empty.log").write_text("")
    assert check(tmp_path / "empty.log").returncode == 1
