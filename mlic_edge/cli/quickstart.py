"""`mlic-edge quickstart`: the whole product on a fresh machine, on data and weights that install.

digits set -> train (tf_efficientnet_lite0, offline ImageNet weights, CPU) -> eval -> ONNX export
(fp32, fp16, int8 for TensorRT, int8 for CPUs) -> parity table -> infer on sample images and a
video clip -> bench -> TensorRT engines (TensorRT for RTX builds them without a GPU; they run
where a GPU they support exists).

Each step is one `mlic-edge` command line, rendered from the step's options, printed, and then run
as it was printed (`commandline.render` / `run_line`): the line a user copies does what the
quickstart did.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.rule import Rule

from ..core.console import make_console
from .commandline import render, run_line

console = make_console()
RECIPE = "quickstart"  # mlic_edge/configs/quickstart.yaml
CALIB_IMAGES = 256     # digits train images for int8 calibration (the paper-scale default is 500)
SAMPLE_IMAGES = 32     # images of the test split that `infer` tags
CLIP_SCENES = 4        # of them, shown 2 s each in the demo video clip


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"), width=min(console.width, 100))   # a rule is no log line


def run(verb: str, *arguments: Any, **options: Any) -> int:
    """Print the command line for these options, then run that line; its exit code."""
    line = render(verb, *arguments, **options)
    console.print(f"[dim]$ {escape(line)}[/dim]", highlight=False)
    return run_line(line)


def line(text: str) -> None:
    console.print(escape(text), highlight=False)


# ----------------------------------------------------------------------------------- steps
def train_step(out: Path, epochs: int | None, overrides: dict[str, Any]) -> Path | None:
    settings = [f"{key}={value}" for key, value in overrides.items()]
    code = run("train", config=RECIPE, epochs=epochs, set_=settings, out=out)
    return out / "best.pt" if code == 0 else None


def eval_step(best: Path, out: Path) -> dict:
    run("eval", best, data="digits", split="test", batch_size=64, device="cpu", workers=1,
        json_out=out / "eval.json", plot=out / "per_class_ap.png")
    return json.loads((out / "eval.json").read_text())


def export_step(best: Path, out: Path) -> dict[str, Path]:
    """fp32 (+ attention maps), fp16, int8 for TensorRT, int8 for CPUs, fp32 with the plugin node."""
    calib = {"precision": "int8", "calib_data": "digits", "calib_images": CALIB_IMAGES}
    exports: dict[str, dict[str, Any]] = {"fp32": {"attention": True}, "fp16": {"precision": "fp16"},
                                          "int8": calib, "int8_cpu": {**calib, "target": "cpu"}}
    if importlib.util.find_spec("onnxruntime_extensions") is not None:  # the plugin's reference op
        exports["fp32_plugin"] = {"irpe_plugin": True}
    else:
        line("iRPE plugin graph: skipped (pip install 'mlic-edge[plugin]' for its reference op)")
    graphs = {}
    for name, options in exports.items():
        graphs[name] = out / f"model_{name}.onnx"
        run("export", best, out=graphs[name], **options)
    return graphs


def parity_step(best: Path, models: list[Path], json_out: Path) -> bool:
    """PyTorch against each model on the digits test split; True when every model passes."""
    return run("parity", *models, reference=best, data="digits", split="test", json_out=json_out) == 0


def infer_step(model: Path, out: Path) -> int:
    from ..data import build_digits_dataset

    samples = sorted((build_digits_dataset() / "test").glob("*.png"))[:SAMPLE_IMAGES]
    listing = out / "samples.txt"
    listing.write_text("".join(f"{p}\n" for p in samples))
    code = run("infer", listing, model=model, out=out / "predictions.csv", save_attention=out / "attention",
               progress=False)
    return code or (0 if video_step(model, samples[:CLIP_SCENES], out) else 1)


def video_step(model: Path, images: list[Path], out: Path) -> bool:
    """A clip made of sample images (2 s each) tagged every 5th frame, with tags over time."""
    from ..core.preprocess import load_image
    from ..runtime.segments import read_segments
    from ..runtime.video import write_slideshow

    clip = out / "clip.mp4"
    # Lossless H.264 (yuv444p, qp 0): frames within 2 levels of their images (RGB <-> YUV rounding).
    starts = write_slideshow([np.asarray(load_image(p)) for p in images], clip, seconds_per_image=2.0, fps=10,
                             lossless=True)
    line(f"{clip}: {len(images)} sample images, 2 s each at 10 fps, lossless H.264 (scene changes at "
         f"{', '.join(f'{t:g}' for t in starts[1:])} s)")
    frames, segments = out / "clip_frames.csv", out / "clip_segments.csv"
    if run("infer", clip, model=model, every=5, out=frames, segments=segments, progress=False) != 0:
        return False
    with frames.open(newline="") as f:
        tagged = sum(1 for _ in csv.DictReader(f))
    found = read_segments(segments)
    line(f"{tagged} frames tagged -> {frames}; {len(found)} segments -> {segments}:")
    for segment in found:
        line(f"  {segment.label:>8}  {segment.start_s:5.1f} - {segment.end_s:5.1f} s  peak {segment.peak_score:.2f}")
    return tagged > 0


def bench_step(model: Path, best: Path, json_out: Path) -> None:
    run("bench", model=model, reference=best, batch_sizes="1,8", repeats=20, json_out=json_out)


def engine_runtime():
    """(TensorRT runtime that can build here, None) or (None, why not): TensorRT 10/11 with a
    GPU, else TensorRT for RTX, which builds without one."""
    from ..core.gpu import gpu_info
    from ..export.engine import resolve_build_runtime

    return resolve_build_runtime("auto", gpu_info(0))


def engine_sources(runtime, graphs: dict[str, Path]) -> dict[str, Path]:
    """The exported graphs this runtime builds engines from (the plugin graph where it takes plugins)."""
    sources = {name: graphs[name] for name in ("fp32", "fp16", "int8")}
    if "fp32_plugin" in graphs:
        no_plugin = runtime.plugin_support()
        if no_plugin:
            line(f"iRPE plugin engine: not built ({no_plugin})")
        else:
            sources["fp32_plugin"] = graphs["fp32_plugin"]
    return sources


def engines_step(out: Path, graphs: dict[str, Path], best: Path) -> bool:
    """Build an engine from each exported TensorRT graph (no second export), and run parity on
    them where this machine has a GPU they run on. False when a step fails."""
    from ..core.errors import MLICError
    from ..core.gpu import gpu_info
    from ..tensorrt.sidecar import check_engine_compatible, read_engine_info

    runtime, why_not = engine_runtime()
    if runtime is None:
        line(f"TensorRT engines: skipped ({why_not})")
        return True
    engines = []
    for name, source in engine_sources(runtime, graphs).items():
        engines.append(out / f"model_{name}.engine")
        if run("build-engine", source, out=engines[-1], runtime=runtime.name) != 0:
            return False
    try:
        check_engine_compatible(read_engine_info(engines[-1]), engines[-1], runtime.version, gpu_info(0))
    except MLICError as e:
        line(f"engines built, not run here: {e}")
        return True
    return parity_step(best, engines, out / "parity_engines.json")


# ----------------------------------------------------------------------------------- the run
def run_quickstart(out: Path, epochs: int | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """The whole run; `overrides` are recipe values ("model.d_model": 32, ...) given as --set: a
    smaller run (tests) goes through exactly the same steps."""
    started = time.perf_counter()
    step("1/7  train on the digits demo set (built on first use)")
    best = train_step(out / "train", epochs, dict(overrides or {}))
    if best is None:
        return {"exit_code": 1}
    trained_s = time.perf_counter() - started
    step("2/7  evaluate best.pt on the digits test split")
    metrics = eval_step(best, out)
    step("3/7  export to ONNX: fp32 (+ attention maps), fp16, int8 for TensorRT, int8 for CPUs, "
         "fp32 with the fused iRPE plugin node")
    graphs = export_step(best, out)
    step("4/7  accuracy parity: PyTorch vs every graph on the digits test split")
    passed = parity_step(best, list(graphs.values()), out / "parity.json")
    step("5/7  infer: tag sample images and a video clip with the fp32 ONNX model (no torch needed for this)")
    infer_code = infer_step(graphs["fp32"], out)
    step("6/7  bench: ONNX Runtime vs PyTorch eager on this CPU")
    for name in ("fp32", "int8_cpu"):
        bench_step(graphs[name], best, out / f"bench_{name}.json")
    step("7/7  TensorRT engines from the exported graphs (TensorRT 10/11 on a GPU, else TensorRT for RTX)")
    passed &= engines_step(out, graphs, best)
    total = time.perf_counter() - started
    console.print(Rule(), width=min(console.width, 100))
    line(f"quickstart finished in {total:.0f} s (training {trained_s:.0f} s); test mAP {metrics['mAP']:.2f}; "
         f"parity {'passed' if passed else 'FAILED'}; infer exit code {infer_code}; outputs in {out}")
    return {"mAP": metrics["mAP"], "checkpoint": str(best), "exit_code": 0 if passed and infer_code == 0 else 1}


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Folder for every output of the run."),
    epochs: Optional[int] = typer.Option(None, help="Override the quickstart recipe's epochs (mlic_edge/configs/quickstart.yaml)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the INFO logs of the libraries underneath (ONNX exporter, optimizers)."),
) -> None:
    """Build the digits demo set, train on the CPU, evaluate, export and check parity: end to end."""
    from ..core.console import setup_logging

    setup_logging(verbose)
    result = run_quickstart(out, epochs=epochs)
    raise typer.Exit(result.get("exit_code", 0))


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
