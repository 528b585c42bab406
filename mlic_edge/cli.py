"""`mlic-edge` command line: few verbs, sensible defaults, every option documented in --help.

Heavy imports (torch, timm, onnx) happen inside the commands, so `--help` is instant and the
runtime verbs work on machines without torch.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-label image classification (iRPE Transformer + APL) from training to the edge.",
)


@app.callback()
def _root() -> None:
    """Multi-label image classification (iRPE Transformer + APL) from training to the edge.

    Typical flow: quickstart | train -> eval -> export -> parity -> build-engine -> infer / bench.
    """


# ----------------------------------------------------------------------------------- model-info
@app.command("model-info")
def model_info(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON recipe or model config (its `model:` section is used)."),
    backbone: Optional[str] = typer.Option(None, help="timm backbone name, e.g. resnet101, tf_efficientnet_lite0."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size in pixels."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Number of labels K."),
    d_model: Optional[int] = typer.Option(None, "--d-model", help="Transformer width."),
    nhead: Optional[int] = typer.Option(None, help="Attention heads."),
    dim_feedforward: Optional[int] = typer.Option(None, "--dim-feedforward", help="FFN width."),
    encoder: Optional[str] = typer.Option(None, help="Encoder: irpe | standard | none."),
    decoder_self_attn: Optional[str] = typer.Option(None, "--decoder-self-attn", help="Decoder self-attention: none | all | second."),
    batch: int = typer.Option(1, help="Batch size of the forward pass whose FLOPs are counted."),
) -> None:
    """Parameter count per part, GFLOPs of one forward pass, feature grid and iRPE buckets."""
    from .model.info import model_info_table

    from .config import ModelConfig, load_yaml_file
    data = {}
    if config is not None:
        raw = load_yaml_file(config)
        data = dict(raw.get("model", raw))
    overrides = dict(backbone=backbone, image_size=image_size, num_classes=num_classes,
                     d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward,
                     encoder=encoder, decoder_self_attn=decoder_self_attn)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["pretrained"] = "none"  # counting needs no weights
    cfg = ModelConfig.from_dict(data)
    model_info_table(cfg, batch=batch)


# ----------------------------------------------------------------------------------- train
@app.command("train", context_settings={"allow_extra_args": False})
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML (see configs/); command-line options override it."),
    data: Optional[str] = typer.Option(None, help="Dataset: voc2007 | voc2012 | coco2014 | folder | digits."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder (VOCdevkit, COCO root, or a folder with train.csv/test.csv)."),
    backbone: Optional[str] = typer.Option(None, help="timm backbone, e.g. resnet101.tv_in1k, tresnet_l, tf_efficientnet_lite0."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: auto | timm | offline | none."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size (448 in the paper)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (80 in the paper)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Batch size per process/GPU."),
    lr: Optional[float] = typer.Option(None, help="One-cycle maximum learning rate (5e-5 in the paper)."),
    loss: Optional[str] = typer.Option(None, help="Loss: apl | asl | focal | bce."),
    encoder: Optional[str] = typer.Option(None, help="Encoder: irpe | standard | none."),
    decoder_self_attn: Optional[str] = typer.Option(None, "--decoder-self-attn", help="Decoder self-attention: none | all | second."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (torchrun picks the GPU per process)."),
    workers: Optional[int] = typer.Option(None, help="Data-loading worker processes per GPU/process."),
    amp: Optional[str] = typer.Option(None, help="Mixed precision on CUDA: auto | bf16 | fp16 | off."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model (CUDA only)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (shuffle, augmentation, init)."),
    set_: List[str] = typer.Option([], "--set", help="Any recipe field: section.key=value, e.g. --set train.ema_decay=0.999 (repeatable)."),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: last.pt, best.pt, metrics.jsonl, curves.png."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt, exactly where it stopped."),
) -> None:
    """Train the paper's model. Multi-GPU: torchrun --nproc-per-node N -m mlic_edge train ...

    Ctrl-C saves last.pt and exits; --resume continues from it.
    """
    from .config import Recipe
    from .train import run_training

    recipe = Recipe.load(config) if config is not None else Recipe()
    overrides = {
        "data.name": data, "data.root": data_root, "data.workers": workers,
        "model.backbone": backbone, "model.pretrained": pretrained, "model.image_size": image_size,
        "model.encoder": encoder, "model.decoder_self_attn": decoder_self_attn,
        "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr, "train.loss": loss,
        "train.device": device, "train.amp": amp, "train.compile": compile, "train.seed": seed,
    }
    recipe = recipe.with_values({k: v for k, v in overrides.items() if v is not None})
    recipe = recipe.with_overrides(list(set_))
    if data is not None and config is None:
        recipe = recipe.with_dataset_defaults()
    code = run_training(recipe, out, resume=resume)
    raise typer.Exit(code)


# ----------------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (best.pt / last.pt) written by `mlic-edge train`."),
    data: str = typer.Option(..., help="Dataset: voc2007 | voc2012 | coco2014 | folder | digits."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset folder (not needed for digits)."),
    split: Optional[str] = typer.Option(None, help="Split to evaluate (default: the dataset's test split: test / val)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Batch size."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    workers: int = typer.Option(2, help="Data-loading worker processes."),
    threshold: float = typer.Option(0.5, help="Score threshold for CP/CR/CF1/OP/OR/OF1."),
    ap_mode: str = typer.Option("noninterp", "--ap-mode", help="AP convention: noninterp (ASL/sklearn) | voc (all-point interpolated, Q2L)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON (mAP, CP, CR, CF1, OP, OR, OF1, per_class_ap, ...)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Per-class AP bar plot (default: next to --json, or <checkpoint dir>/per_class_ap.png)."),
    voc12_submission: Optional[Path] = typer.Option(None, "--voc12-submission", help="Write VOC2012 test-server files comp1_cls_test_<class>.txt into this folder."),
) -> None:
    """Evaluate a checkpoint: mAP, CP, CR, CF1, OP, OR, OF1 (+ top-3) and per-class AP."""
    from .train.eval_cli import run_eval

    run_eval(checkpoint, data, data_root, split, batch_size=batch_size, device=device, workers=workers,
             threshold=threshold, ap_mode=ap_mode, json_out=json_out, plot=plot,
             voc12_submission=voc12_submission)


# ----------------------------------------------------------------------------------- quickstart
@app.command("quickstart")
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Folder for every output of the run."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs (default 6)."),
) -> None:
    """Build the digits demo set, train on the CPU, evaluate, export and check parity: end to end."""
    from .quickstart import run_quickstart

    result = run_quickstart(out, epochs=epochs)
    raise typer.Exit(result.get("exit_code", 0))


# Verbs defined beside their stage: export, parity, build-engine (export/); infer, bench, doctor
# (runtime/). Their modules import nothing heavy until a command runs.
from .export import commands as _export_verbs, engine_commands as _engine_verbs  # noqa: E402
from .runtime import commands as _runtime_verbs  # noqa: E402

for _verbs in (_export_verbs, _engine_verbs, _runtime_verbs):
    _verbs.register(app)


def main(argv: Optional[List[str]] = None) -> None:
    """Console entry point: user errors become one red line, never a traceback."""
    from .errors import MLICError
    try:
        app(args=argv, standalone_mode=True)
    except MLICError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
