"""CLI verbs of the training stage: `train`, `eval`, `model-info`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from ..data.registry import dataset_help
from ..model.presets import preset_help
from .options import Data, DataRoot, TrainDevice, renamed


# ----------------------------------------------------------------------------------- model-info
RECIPE_HELP = "a recipe file, or a shipped recipe's name (voc07_r101_448, ablations/coco_r101_448_loss_bce, ...)"


def model_info(
    config: Optional[str] = typer.Option(None, "--config", "-c", help=f"Model config: {RECIPE_HELP}; its `model:` section is used."),
    backbone: Optional[str] = typer.Option(None, help="timm backbone name, e.g. resnet101, tf_efficientnet_lite0."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size in pixels."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Number of labels K."),
    d_model: Optional[int] = typer.Option(None, "--d-model", help="Transformer width."),
    nhead: Optional[int] = typer.Option(None, help="Attention heads."),
    dim_feedforward: Optional[int] = typer.Option(None, "--dim-feedforward", help="FFN width."),
    encoder: Optional[str] = typer.Option(None, help="Encoder: irpe | standard | none."),
    decoder_self_attn: Optional[str] = typer.Option(None, "--decoder-self-attn", help="Decoder self-attention: none | all | second."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Batch size of the forward pass whose FLOPs are counted."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=preset_help()),
    batch_alias: Optional[int] = typer.Option(None, "--batch", hidden=True),
    preset_alias: Optional[str] = typer.Option(None, "--model", "-m", hidden=True),
    list_: bool = typer.Option(False, "--list", help="List the model presets: parameters, GFLOPs, measured CPU images/s."),
) -> None:
    """Parameter count per part, GFLOPs of one forward pass, feature grid and iRPE buckets."""
    from ..model.info import model_config, model_info_table, presets_table
    if list_:
        presets_table()
        return
    overrides = dict(backbone=backbone, image_size=image_size, num_classes=num_classes,
                     d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward,
                     encoder=encoder, decoder_self_attn=decoder_self_attn)
    batch_size = renamed(batch_size, batch_alias, new="--batch-size", old="--batch", default=1)
    preset = renamed(preset, preset_alias, new="--preset", old="--model")
    model_info_table(model_config(config, preset=preset, **overrides), batch=batch_size)


# ----------------------------------------------------------------------------------- train
def train(
    config: Optional[str] = typer.Option(None, "--config", "-c", help=f"Recipe: {RECIPE_HELP}; command-line options override it."),
    data: Data = None,
    data_root: DataRoot = None,
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=preset_help() + " Without --config the training settings are derived from it and the data (printed; written to recipe.yaml)."),
    preset_alias: Optional[str] = typer.Option(None, "--model", "-m", hidden=True),
    backbone: Optional[str] = typer.Option(None, help="timm backbone, e.g. resnet101.tv_in1k, tresnet_l, tf_efficientnet_lite0."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: auto | timm | offline | none."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input size (448 in the paper)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (80 in the paper). Own data without it: trains until the validation mAP stops improving, within --time."),
    time_budget: Optional[float] = typer.Option(None, "--time", metavar="MINUTES", help="Time budget in minutes of training + validation (own data without --epochs: 7). With own data's cosine schedule the learning rate reaches 0 when it is spent and the run ends there; with one-cycle the run stops when another epoch would not fit."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Batch size per process/GPU."),
    lr: Optional[float] = typer.Option(None, help="One-cycle maximum learning rate (5e-5 in the paper)."),
    loss: Optional[str] = typer.Option(None, help="Loss: apl | asl | focal | bce."),
    encoder: Optional[str] = typer.Option(None, help="Encoder: irpe | standard | none."),
    decoder_self_attn: Optional[str] = typer.Option(None, "--decoder-self-attn", help="Decoder self-attention: none | all | second."),
    device: TrainDevice = None,
    workers: Optional[int] = typer.Option(None, help="Data-loading worker processes per GPU/process."),
    amp: Optional[str] = typer.Option(None, help="Mixed precision on CUDA: auto | bf16 | fp16 | off."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model (CUDA only)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (shuffle, augmentation, init)."),
    set_: List[str] = typer.Option([], "--set", help="Any recipe field: section.key=value, e.g. --set train.ema_decay=0.999 (repeatable)."),
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: last.pt, best.pt, metrics.jsonl, curves.png."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt, exactly where it stopped."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the INFO logs of the libraries underneath (timm, torch)."),
) -> None:
    """Train the paper's model. Multi-GPU: torchrun --nproc-per-node N -m mlic_edge train ...

    Own data (--data folder) or a model preset (--model) without --config: the training settings
    are derived from the preset (default lite0-224) and the data set's size (printed, and written
    to recipe.yaml); options given on the command line still win. With --config, the recipe's
    settings are used as they are (--model then only replaces its model section).
    Own data without --epochs stops when the validation mAP has not improved for 3 epochs or when
    the --time budget is spent (the reason is printed and written to metrics.jsonl).
    Ctrl-C saves last.pt and exits; --resume continues from it.
    """
    import logging

    from ..core.console import setup_logging
    from ..train.api import TrainingInterrupted, train as train_run

    setup_logging(verbose)
    try:
        train_run(config, data=data, data_root=data_root, preset=renamed(preset, preset_alias, new="--preset", old="--model"), out=out, resume=resume, workers=workers,
                  set_items=list(set_), backbone=backbone, pretrained=pretrained,
                  image_size=image_size, encoder=encoder, decoder_self_attn=decoder_self_attn, epochs=epochs,
                  time_budget=time_budget, batch_size=batch_size, lr=lr, loss=loss, device=device,
                  amp=amp, compile=compile, seed=seed)
    except TrainingInterrupted as e:
        logging.getLogger("mlic_edge").warning(str(e))
        raise typer.Exit(130) from None


# ----------------------------------------------------------------------------------- eval
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (best.pt / last.pt) written by `mlic-edge train`.")],
    data: Annotated[str, typer.Option("--data", help=dataset_help())],
    data_root: DataRoot = None,
    split: Optional[str] = typer.Option(None, help="Split to evaluate (default: the dataset's test split: test / val)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Batch size."),
    device: TrainDevice = "auto",
    workers: int = typer.Option(2, help="Data-loading worker processes."),
    threshold: float = typer.Option(0.5, help="Score threshold for CP/CR/CF1/OP/OR/OF1."),
    ap_mode: str = typer.Option("noninterp", "--ap-mode", help="AP convention: noninterp (ASL/sklearn) | voc (all-point interpolated, Q2L)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON (mAP, CP, CR, CF1, OP, OR, OF1, per_class_ap, ...)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Per-class AP bar plot (default: next to --json, or <checkpoint dir>/per_class_ap.png)."),
    voc12_submission: Optional[Path] = typer.Option(None, "--voc12-submission", help="Write VOC2012 test-server files comp1_cls_test_<class>.txt into this folder."),
) -> None:
    """Evaluate a checkpoint: mAP, CP, CR, CF1, OP, OR, OF1 (+ top-3) and per-class AP."""
    from ..core.console import setup_logging
    from ..train.api import evaluate

    setup_logging()
    evaluate(checkpoint, data=data, data_root=data_root, split=split, batch_size=batch_size, device=device,
             workers=workers, threshold=threshold, ap_mode=ap_mode, json_out=json_out, plot=plot,
             voc12_submission=voc12_submission)


def register(app: typer.Typer) -> None:
    app.command("train", context_settings={"allow_extra_args": False})(train)
    app.command("eval")(eval_)
    app.command("model-info")(model_info)
