"""`mlic-edge quickstart`: the whole product on a fresh machine, on data and weights that install.

digits set -> train (tf_efficientnet_lite0, offline ImageNet weights, CPU) -> eval -> ONNX export
(fp32, fp16, int8 for TensorRT, int8 for CPUs) -> parity table -> infer on sample images ->
bench -> (TensorRT engines, where TensorRT and a GPU exist).

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


def tensorrt_ready() -> bool:
    """TensorRT importable (the registry's wheels can be stubs that fail on import) and a GPU."""
    from .errors import BackendUnavailable
    from .runtime.cuda_io import gpu_info
    from .runtime.tensorrt_backend import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailable:
        return False
    return gpu_info(0) is not None


def run_quickstart(out: Path, epochs: int | None = None) -> dict:
    from .train import run_training
    from .train.eval_cli import run_eval

    started = time.perf_counter()
    recipe = quickstart_recipe()
    if epochs is not None:
        recipe = recipe.with_values({"train.epochs": epochs})
    run_dir = out / "train"

    step("1/6  train on the digits demo set (built on first use)")
    code = run_training(recipe, run_dir)
    if code != 0:
        return {"exit_code": code}
    best = run_dir / "best.pt"
    trained_s = time.perf_counter() - started

    step("2/6  evaluate best.pt on the digits test split")
    metrics = run_eval(best, "digits", None, "test", batch_size=64, device="cpu", workers=1,
                       threshold=0.5, ap_mode="noninterp", json_out=out / "eval.json",
                       plot=out / "per_class_ap.png", voc12_submission=None)

    step("3/6  export to ONNX: fp32 (+ attention maps), fp16, int8 for TensorRT, int8 for CPUs, "
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

    step("4/6  accuracy parity: PyTorch vs every graph on the digits test split")
    parity_code = run_command(["parity", "--data", "digits", "--reference", str(best),
                               *map(str, onnx.values()), "--json", str(out / "parity.json")])

    step("5/6  infer: tag sample images with the fp32 ONNX model (no torch needed for this)")
    from .data import build_digits_dataset
    test_dir = build_digits_dataset() / "test"
    samples = sorted(test_dir.glob("*.png"))[:SAMPLE_IMAGES]
    listing = out / "samples.txt"
    listing.write_text("".join(f"{p}\n" for p in samples))
    infer_code = run_command(["infer", str(listing), "--model", str(onnx["fp32"]), "--out",
                              str(out / "predictions.csv"), "--save-attention", str(out / "attention"),
                              "--no-progress"])

    step("6/6  bench: ONNX Runtime vs PyTorch eager on this CPU")
    for name in ("fp32", "int8_cpu"):
        run_command(["bench", "--model", str(onnx[name]), "--reference", str(best), "--batch", "1,8",
                     "--repeats", "20", "--json", str(out / f"bench_{name}.json")])

    if tensorrt_ready():
        step("TensorRT: fp16 and int8 engines (+ fp16 with the iRPE plugin), parity")
        engines = [out / "model_fp16.engine", out / "model_int8.engine"]
        # from the graphs exported (and parity-checked) above, not a second export
        run_command(["build-engine", str(onnx["fp16"]), "--out", str(engines[0])])
        run_command(["build-engine", str(onnx["int8"]), "--out", str(engines[1])])
        if "fp32_plugin" in onnx:  # the fused iRPE plugin (AOT PTX kernel) in an fp16 engine
            engines.append(out / "model_fp16_plugin.engine")
            run_command(["build-engine", str(best), "--fp16", "--irpe-plugin", "--out", str(engines[2])])
        parity_code |= run_command(["parity", "--data", "digits", "--reference", str(best),
                                    *map(str, engines), "--json", str(out / "parity_engines.json")])
    else:
        console.print("TensorRT engines: skipped (TensorRT or a CUDA GPU is not available here; "
                      "pip install 'mlic-edge\\[trt]' on a GPU machine)")

    total = time.perf_counter() - started
    console.print(Rule())
    console.print(f"quickstart finished in {total:.0f} s (training {trained_s:.0f} s); test mAP "
                  f"{metrics['mAP']:.2f}; parity {'passed' if parity_code == 0 else 'FAILED'}; "
                  f"infer exit code {infer_code}; outputs in {out}")
    return {"mAP": metrics["mAP"], "checkpoint": str(best), "exit_code": parity_code or infer_code}
