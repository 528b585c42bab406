"""`mlic-edge quickstart`: the whole product on a fresh machine, on data and weights that install.

digits set -> train (tf_efficientnet_lite0, offline ImageNet weights, CPU) -> eval -> ONNX export
(fp32, fp16, int8 for TensorRT, int8 for CPUs) -> parity table -> infer on sample images ->
bench -> TensorRT engines (TensorRT for RTX builds them without a GPU; they run where a GPU
they support exists).

Each step calls the library and first prints the `mlic-edge ...` command that does the same, so
a user can rerun any step on its own.
"""
from __future__ import annotations

import importlib.util
import time
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from ..core.console import make_console
from rich.markup import escape
from rich.rule import Rule

from ..config import Recipe

console = make_console()
CALIB_IMAGES = 256   # digits train images for int8 calibration (the paper-scale default is 500)
SAMPLE_IMAGES = 32   # images of the test split that `infer` tags
CLIP_SCENES = 4      # of them, shown 2 s each in the demo video clip


def quickstart_recipe() -> Recipe:
    text = resources.files("mlic_edge").joinpath("resources", "quickstart.yaml").read_text()
    return Recipe.from_yaml(text)


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def say(command: str) -> None:
    """The command line that does what the next call does."""
    console.print(f"[dim]$ mlic-edge {escape(command)}[/dim]", highlight=False)


def line(text: str) -> None:
    console.print(escape(text), highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------- steps
def train_step(out: Path, recipe: Recipe) -> Path | None:
    from ..train import run_training

    say(f"train -c mlic_edge/resources/quickstart.yaml --set train.epochs={recipe.train.epochs} --out {out}")
    return out / "best.pt" if run_training(recipe, out) == 0 else None


def eval_step(best: Path, out: Path) -> dict:
    from ..train.evaluate import run_eval

    say(f"eval {best} --data digits --split test --json {out / 'eval.json'}")
    return run_eval(best, "digits", None, "test", batch_size=64, device="cpu", workers=1, threshold=0.5,
                    ap_mode="noninterp", json_out=out / "eval.json", plot=out / "per_class_ap.png",
                    voc12_submission=None)


def export_step(best: Path, out: Path) -> dict[str, Path]:
    """fp32 (+ attention maps), fp16, int8 for TensorRT, int8 for CPUs, fp32 with the plugin node."""
    from ..export import export_onnx
    from ..export.calibration import DatasetSource
    from .export import export_summary

    digits = DatasetSource("digits", None, "train")
    calib = f"--calib-data digits --calib-images {CALIB_IMAGES}"
    exports: list[tuple[str, str, dict[str, Any]]] = [
        ("fp32", "--attention", {"with_attention": True}),
        ("fp16", "--precision fp16", {"precision": "fp16"}),
        ("int8", f"--precision int8 {calib}",
         {"precision": "int8", "calib": digits, "calib_images": CALIB_IMAGES}),
        ("int8_cpu", f"--precision int8 --target cpu {calib}",
         {"precision": "int8", "target": "cpu", "calib": digits, "calib_images": CALIB_IMAGES}),
    ]
    if importlib.util.find_spec("onnxruntime_extensions") is not None:  # the plugin's reference op
        exports.append(("fp32_plugin", "--irpe-plugin", {"irpe_plugin": True}))
    else:
        line("iRPE plugin graph: skipped (pip install 'mlic-edge[plugin]' for its reference op)")
    graphs = {}
    for name, flags, options in exports:
        graphs[name] = out / f"model_{name}.onnx"
        say(f"export {best} --out {graphs[name]} {flags}")
        line("  " + export_summary(export_onnx(best, graphs[name], **options)))
    return graphs


def parity_step(best: Path, models: list[Path], json_out: Path) -> bool:
    from ..core.files import atomic_write_bytes
    from ..parity import run_parity
    from .parity import print_parity

    say(f"parity --data digits --reference {best} {' '.join(map(str, models))} --json {json_out}")
    report = run_parity(best, models, data="digits", split="test")
    print_parity(report, console)
    import json
    atomic_write_bytes(json_out, json.dumps(report.to_dicts(), indent=2, allow_nan=True).encode())
    return report.passed


def infer_step(model: Path, out: Path) -> int:
    from ..data import build_digits_dataset
    from ..runtime.infer import run_inference

    samples = sorted((build_digits_dataset() / "test").glob("*.png"))[:SAMPLE_IMAGES]
    listing = out / "samples.txt"
    listing.write_text("".join(f"{p}\n" for p in samples))
    say(f"infer {listing} --model {model} --out {out / 'predictions.csv'} --save-attention {out / 'attention'}")
    summary = run_inference(listing, model, out / "predictions.csv", save_attention=out / "attention",
                            progress=False, console=console)
    line(f"  {summary.processed}/{summary.total} images labelled, {summary.failed} skipped, "
         f"{summary.attention_images} attention maps -> {summary.out}")
    return 0 if summary.processed and video_step(model, samples[:CLIP_SCENES], out) else 1


def video_step(model: Path, images: list[Path], out: Path) -> bool:
    """A clip made of sample images (2 s each) tagged every 5th frame, with tags over time."""
    from ..core.preprocess import load_image
    from ..runtime.segments import read_segments
    from ..runtime.video import write_slideshow
    from ..runtime.infer import run_inference

    clip = out / "clip.mp4"
    # Lossless H.264 (yuv444p, qp 0): frames within 2 levels of their images (RGB <-> YUV rounding).
    starts = write_slideshow([np.asarray(load_image(p)) for p in images], clip, seconds_per_image=2.0, fps=10,
                             lossless=True)
    line(f"  {clip}: {len(images)} sample images, 2 s each at 10 fps, lossless H.264 (scene changes at "
         f"{', '.join(f'{t:g}' for t in starts[1:])} s)")
    frames, segments = out / "clip_frames.csv", out / "clip_segments.csv"
    say(f"infer {clip} --model {model} --every 5 --out {frames} --segments {segments}")
    summary = run_inference(clip, model, frames, every=5, segments=segments, progress=False, console=console)
    found = read_segments(segments)
    line(f"  {summary.processed} frames tagged -> {frames}; {len(found)} segments -> {segments}:")
    for segment in found:
        line(f"    {segment.label:>8}  {segment.start_s:5.1f} - {segment.end_s:5.1f} s  peak {segment.peak_score:.2f}")
    return summary.processed > 0


def bench_step(model: Path, best: Path, json_out: Path) -> None:
    import json

    from ..core.files import atomic_write_text
    from ..runtime.bench import run_bench
    from .bench import print_bench

    say(f"bench --model {model} --reference {best} --batch 1,8 --repeats 20 --json {json_out}")
    report = run_bench(model, batches=[1, 8], repeats=20, reference=best)
    print_bench(report, console)
    atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")


def engine_runtime():
    """(TensorRT runtime that can build here, None) or (None, why not): TensorRT 10/11 with a
    GPU, else TensorRT for RTX, which builds without one."""
    from ..core.gpu import gpu_info
    from ..export.engine import resolve_build_runtime

    return resolve_build_runtime("auto", gpu_info(0))


def engines_step(out: Path, graphs: dict[str, Path], best: Path) -> bool:
    """Build an engine from each exported TensorRT graph (no second export), list them, and run
    parity on them where this machine has a GPU they run on. False when a step fails."""
    from ..tensorrt.sidecar import check_engine_compatible
    from ..core.errors import MLICError
    from ..core.gpu import gpu_info
    from ..export import build_engine
    from .build_engine import describe_build

    runtime, why_not = engine_runtime()
    if runtime is None:
        line(f"TensorRT engines: skipped ({why_not})")
        return True
    sources = {"fp32": graphs["fp32"], "fp16": graphs["fp16"], "int8": graphs["int8"]}
    if "fp32_plugin" in graphs:
        no_plugin = runtime.plugin_support()
        if no_plugin:
            line(f"iRPE plugin engine: not built ({no_plugin})")
        else:
            sources["fp32_plugin"] = graphs["fp32_plugin"]
    engines = []
    for name, source in sources.items():
        engine = out / f"model_{name}.engine"
        say(f"build-engine {source} --out {engine} --runtime {runtime.name}")
        try:
            result = build_engine(source, engine, runtime=runtime.name)
        except MLICError as e:
            console.print(f"[red]error: {escape(str(e))}[/red]")
            return False
        for text in describe_build(result):
            line("  " + text)
        engines.append(engine)
    try:
        check_engine_compatible(result.info, engines[-1], runtime.version, gpu_info(0))
    except MLICError as e:
        line(f"engines built, not run here: {e}")
        return True
    return parity_step(best, engines, out / "parity_engines.json")


# ----------------------------------------------------------------------------------- the run
def run_quickstart(out: Path, epochs: int | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """The whole run; `overrides` are recipe values ("model.d_model": 32, ...): a smaller run
    (tests) goes through exactly the same steps."""
    started = time.perf_counter()
    recipe = quickstart_recipe().with_values(dict(overrides or {}))
    if epochs is not None:
        recipe = recipe.with_values({"train.epochs": epochs})

    step("1/7  train on the digits demo set (built on first use)")
    best = train_step(out / "train", recipe)
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
    console.print(Rule())
    line(f"quickstart finished in {total:.0f} s (training {trained_s:.0f} s); test mAP {metrics['mAP']:.2f}; "
         f"parity {'passed' if passed else 'FAILED'}; infer exit code {infer_code}; outputs in {out}")
    return {"mAP": metrics["mAP"], "checkpoint": str(best), "exit_code": 0 if passed and infer_code == 0 else 1}


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Folder for every output of the run."),
    epochs: Optional[int] = typer.Option(None, help=f"Override the recipe's epochs (default {quickstart_recipe().train.epochs})."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the INFO logs of the libraries underneath (ONNX exporter, optimizers)."),
) -> None:
    """Build the digits demo set, train on the CPU, evaluate, export and check parity: end to end."""
    from ..core.console import setup_logging

    setup_logging(verbose)
    result = run_quickstart(out, epochs=epochs)
    raise typer.Exit(result.get("exit_code", 0))


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
