"""`mlic-edge quickstart`: the whole product on a fresh machine, on data and weights that install.

digits set -> train (tf_efficientnet_lite0, offline ImageNet weights, CPU) -> eval -> ONNX export
(fp32, fp16, int8 for TensorRT, int8 for CPUs) -> parity table -> infer on sample images ->
bench -> TensorRT engines (TensorRT for RTX builds them without a GPU; they run where a GPU
they support exists).

Every step after training runs the same CLI command a user would type (printed before it runs).
"""
from __future__ import annotations

import importlib.util
import shlex
import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from .config import Recipe

console = Console()
CALIB_IMAGES = 256   # digits train images for int8 calibration (the paper-scale default is 500)
SAMPLE_IMAGES = 32   # images of the test split that `infer` tags


def quickstart_recipe() -> Recipe:
    text = resources.files("mlic_edge").joinpath("resources", "quickstart.yaml").read_text()
    return Recipe.from_yaml(text)


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def run_command(args: list[str]) -> int:
    """Run one `mlic-edge ...` command in this process; returns its exit code."""
    import click

    from .cli import app
    from .errors import MLICError

    console.print(f"[dim]$ mlic-edge {' '.join(shlex.quote(a) for a in args)}[/dim]")
    try:
        result = app(args=args, standalone_mode=False, prog_name="mlic-edge")
    except click.exceptions.Exit as e:
        return e.exit_code
    except MLICError as e:  # as `mlic-edge` itself reports it: one line, exit code 2
        console.print(f"[red]error: {e}[/red]")
        return 2
    return result if isinstance(result, int) else 0


def engine_runtime():
    """(TensorRT runtime that can build here, None) or (None, why not): TensorRT 10/11 with a
    GPU, else TensorRT for RTX, which builds without one."""
    from .export.tensorrt_engine import resolve_build_runtime
    from .runtime.cuda_io import gpu_info

    return resolve_build_runtime("auto", gpu_info(0))


def build_engines(out: Path, onnx: dict[str, Path], best: Path) -> int:
    """Build an engine from each exported TensorRT graph (no second export), list them, and run
    parity on them where this machine has a GPU they run on. Returns parity's exit code (0 when
    the engines cannot run here)."""
    from rich.markup import escape

    from .errors import MLICError
    from .export import build_engine
    from .export.engine_commands import describe_build
    from .runtime.cuda_io import gpu_info
    from .runtime.engine_info import check_engine_compatible

    runtime, why_not = engine_runtime()
    if runtime is None:
        console.print(f"TensorRT engines: skipped ({escape(why_not)})")
        return 0
    sources = {"fp32": onnx["fp32"], "fp16": onnx["fp16"], "int8": onnx["int8"]}
    if "fp32_plugin" in onnx and runtime.plugin_support() is None:
        sources["fp32_plugin"] = onnx["fp32_plugin"]
    elif "fp32_plugin" in onnx:
        console.print(f"iRPE plugin engine: not built ({escape(runtime.plugin_support())})")
    engines = []
    for name, source in sources.items():
        engine = out / f"model_{name}.engine"
        console.print(f"[dim]$ mlic-edge build-engine {source} --out {engine} --runtime {runtime.name}[/dim]")
        try:
            result = build_engine(source, engine, runtime=runtime.name)
        except MLICError as e:
            console.print(f"[red]error: {escape(str(e))}[/red]")
            return 1
        for line in describe_build(result):
            console.print(escape(line), highlight=False, soft_wrap=True)
        engines.append(engine)
    gpu = gpu_info(0)
    try:
        check_engine_compatible(result.info, engines[-1], runtime.version, gpu)
    except MLICError as e:
        console.print(f"engines built, not run here: {escape(str(e))}")
        return 0
    return run_command(["parity", "--data", "digits", "--reference", str(best), *map(str, engines),
                        "--json", str(out / "parity_engines.json")])


def run_quickstart(out: Path, epochs: int | None = None) -> dict:
    from .train import run_training
    from .train.eval_cli import run_eval

    started = time.perf_counter()
    recipe = quickstart_recipe()
    if epochs is not None:
        recipe = recipe.with_values({"train.epochs": epochs})
    run_dir = out / "train"

    step("1/7  train on the digits demo set (built on first use)")
    code = run_training(recipe, run_dir)
    if code != 0:
        return {"exit_code": code}
    best = run_dir / "best.pt"
    trained_s = time.perf_counter() - started

    step("2/7  evaluate best.pt on the digits test split")
    metrics = run_eval(best, "digits", None, "test", batch_size=64, device="cpu", workers=1,
                       threshold=0.5, ap_mode="noninterp", json_out=out / "eval.json",
                       plot=out / "per_class_ap.png", voc12_submission=None)

    step("3/7  export to ONNX: fp32 (+ attention maps), fp16, int8 for TensorRT, int8 for CPUs, "
         "fp32 with the fused iRPE plugin node")
    onnx = {name: out / f"model_{name}.onnx" for name in ("fp32", "fp16", "int8", "int8_cpu")}
    calib = ["--calib-data", "digits", "--calib-images", str(CALIB_IMAGES)]
    exports = [
        ["export", str(best), "--out", str(onnx["fp32"]), "--attention"],
        ["export", str(best), "--out", str(onnx["fp16"]), "--precision", "fp16"],
        ["export", str(best), "--out", str(onnx["int8"]), "--precision", "int8", *calib],
        ["export", str(best), "--out", str(onnx["int8_cpu"]), "--precision", "int8", "--target", "cpu", *calib],
    ]
    if importlib.util.find_spec("onnxruntime_extensions") is not None:  # the plugin's reference op
        onnx["fp32_plugin"] = out / "model_fp32_plugin.onnx"
        exports.append(["export", str(best), "--out", str(onnx["fp32_plugin"]), "--irpe-plugin"])
    else:
        console.print("iRPE plugin graph: skipped (pip install 'mlic-edge\\[plugin]' for its reference op)")
    for args in exports:
        if run_command(args) != 0:
            return {"exit_code": 1}

    step("4/7  accuracy parity: PyTorch vs every graph on the digits test split")
    parity_code = run_command(["parity", "--data", "digits", "--reference", str(best),
                               *map(str, onnx.values()), "--json", str(out / "parity.json")])

    step("5/7  infer: tag sample images with the fp32 ONNX model (no torch needed for this)")
    from .data import build_digits_dataset
    test_dir = build_digits_dataset() / "test"
    samples = sorted(test_dir.glob("*.png"))[:SAMPLE_IMAGES]
    listing = out / "samples.txt"
    listing.write_text("".join(f"{p}\n" for p in samples))
    infer_code = run_command(["infer", str(listing), "--model", str(onnx["fp32"]), "--out",
                              str(out / "predictions.csv"), "--save-attention", str(out / "attention"),
                              "--no-progress"])

    step("6/7  bench: ONNX Runtime vs PyTorch eager on this CPU")
    for name in ("fp32", "int8_cpu"):
        run_command(["bench", "--model", str(onnx[name]), "--reference", str(best), "--batch", "1,8",
                     "--repeats", "20", "--json", str(out / f"bench_{name}.json")])

    step("7/7  TensorRT engines from the exported graphs (TensorRT 10/11 on a GPU, else TensorRT for RTX)")
    parity_code |= build_engines(out, onnx, best)

    total = time.perf_counter() - started
    console.print(Rule())
    console.print(f"quickstart finished in {total:.0f} s (training {trained_s:.0f} s); test mAP "
                  f"{metrics['mAP']:.2f}; parity {'passed' if parity_code == 0 else 'FAILED'}; "
                  f"infer exit code {infer_code}; outputs in {out}")
    return {"mAP": metrics["mAP"], "checkpoint": str(best), "exit_code": parity_code or infer_code}
