"""CLI verbs of the training stage: `train`, `eval`, `model-info`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from ..data.registry import dataset_help
from ..model.presets import preset_help
from .options import Data, DataRoot, Device


# ----------------------------------------------------------------------------------- model-info
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
    model: Optional[str] = typer.Option(None, "--model", "-m", help=preset_help()),
    list_: bool = typer.Option(False, "--list", help="List the model presets: parameters, GFLOPs, measured CPU images/s."),
) -> None:
    """Parameter count per part, GFLOPs of one forward pass, feature grid and iRPE buckets."""
    from ..config import ModelConfig, load_yaml_file
    from ..model.info import model_info_table, presets_table
    if list_:
        presets_table()
        return
    data = {}
    if model is not None:
        from ..model.presets import get_preset
        data = dict(get_preset(model).model)
    if config is not None:
        raw = load_yaml_file(config)
        data.update(raw.get("model", raw))
    overrides = dict(backbone=backbone, image_size=image_size, num_classes=num_classes,
                     d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward,
                     encoder=encoder, decoder_self_attn=decoder_self_attn)
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["pretrained"] = "none"  # counting needs no weights
    cfg = ModelConfig.from_dict(data)
    model_info_table(cfg, batch=batch)


# ----------------------------------------------------------------------------------- train
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Recipe YAML (see configs/); command-line options override it."),
    data: Data = None,
    data_root: DataRoot = None,
    model: Optional[str] = typer.Option(None, "--model", "-m", help=preset_help() + " Without --config the training settings are derived from it and the data (printed; written to recipe.yaml)."),
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
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N (torchrun picks the GPU per process)."),
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
    from ..config import Recipe
    from ..core.console import setup_logging
    from ..train import run_training

    if device is not None:   # before any data is read: a GPU that is not there fails now
        from ..train.distributed import check_device_available
        check_device_available(device, "--device")
    setup_logging(verbose)
    recipe = Recipe.load(config) if config is not None else Recipe()
    data_values = {"data.name": data, "data.root": str(data_root) if data_root else None, "data.workers": workers}
    recipe = recipe.with_values({k: v for k, v in data_values.items() if v is not None})
    if data is not None and config is None:
        from ..data.registry import default_splits
        recipe = recipe.with_splits(*default_splits(data))
    options = {
        "model.backbone": backbone, "model.pretrained": pretrained, "model.image_size": image_size,
        "model.encoder": encoder, "model.decoder_self_attn": decoder_self_attn,
        "train.epochs": epochs, "train.time_budget": time_budget, "train.batch_size": batch_size, "train.lr": lr, "train.loss": loss,
        "train.device": device, "train.amp": amp, "train.compile": compile, "train.seed": seed,
    }
    given = user_values(options, list(set_))
    notes = ""
    if not resume and (model is not None or (config is None and recipe.data.name == "folder")):
        from ..model.presets import DEFAULT_PRESET, get_preset
        preset = get_preset(model or DEFAULT_PRESET)
        if config is None:
            from ..train.auto_recipe import derive_for_dataset
            # what the user set is used as set; what follows from it is derived from the final values
            derived = derive_for_dataset(recipe, preset, given=given)
            recipe, notes = derived.recipe, derived.describe()
            print(notes)
        else:
            recipe = recipe.with_values({f"model.{k}": v for k, v in preset.model.items()})
    recipe = recipe.with_values(given)
    code = run_training(recipe, out, resume=resume, notes=notes)
    raise typer.Exit(code)


def user_values(options: dict, set_items: list[str]) -> dict:
    """{"section.key": value} the user set: the options given (not None), then --set items
    (later ones win), each checked against its field's type."""
    from ..config import parse_override

    values = {k: v for k, v in options.items() if v is not None}
    values.update(dict(parse_override(item) for item in set_items))
    return values


# ----------------------------------------------------------------------------------- eval
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (best.pt / last.pt) written by `mlic-edge train`.")],
    data: Annotated[str, typer.Option("--data", help=dataset_help())],
    data_root: DataRoot = None,
    split: Optional[str] = typer.Option(None, help="Split to evaluate (default: the dataset's test split: test / val)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Batch size."),
    device: Device = "auto",
    workers: int = typer.Option(2, help="Data-loading worker processes."),
    threshold: float = typer.Option(0.5, help="Score threshold for CP/CR/CF1/OP/OR/OF1."),
    ap_mode: str = typer.Option("noninterp", "--ap-mode", help="AP convention: noninterp (ASL/sklearn) | voc (all-point interpolated, Q2L)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON (mAP, CP, CR, CF1, OP, OR, OF1, per_class_ap, ...)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Per-class AP bar plot (default: next to --json, or <checkpoint dir>/per_class_ap.png)."),
    voc12_submission: Optional[Path] = typer.Option(None, "--voc12-submission", help="Write VOC2012 test-server files comp1_cls_test_<class>.txt into this folder."),
) -> None:
    """Evaluate a checkpoint: mAP, CP, CR, CF1, OP, OR, OF1 (+ top-3) and per-class AP."""
    from ..train.evaluate import run_eval

    run_eval(checkpoint, data, data_root, split, batch_size=batch_size, device=device, workers=workers,
             threshold=threshold, ap_mode=ap_mode, json_out=json_out, plot=plot,
             voc12_submission=voc12_submission)


def register(app: typer.Typer) -> None:
    app.command("train", context_settings={"allow_extra_args": False})(train)
    app.command("eval")(eval_)
    app.command("model-info")(model_info)
