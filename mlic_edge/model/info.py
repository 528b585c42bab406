"""`mlic-edge model-info`: what a config costs before anyone trains it."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from .irpe import num_buckets
from .mlic import MLICModel, build_model

PARTS = {
    "backbone": ("backbone",),
    "input projection (1x1 conv)": ("input_proj",),
    "position embedding": ("pos_embed",),
    "encoder": ("transformer.encoder",),
    "decoder": ("transformer.decoder", "transformer.decoder_norm"),
    "label embeddings": ("query_embed",),
    "group-wise heads": ("head",),
}


def parameter_counts(model: MLICModel) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        for part, prefixes in PARTS.items():
            if name.startswith(prefixes):
                counts[part] += p.numel()
                break
        else:  # a new part must be listed in PARTS, or the table would silently under-count
            raise AssertionError(f"parameter {name} belongs to no part")
    return counts


def count_flops(model: MLICModel, batch: int = 1) -> int:
    """FLOPs of one forward pass (torch's flop counter: 2 per multiply-add of matmuls/convs)."""
    x = torch.zeros(batch, 3, model.cfg.image_size, model.cfg.image_size)
    # Frozen weights rather than no_grad(): the counter's module tracker trips over no_grad.
    model.eval().requires_grad_(False)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def model_config(config=None, preset: str | None = None, **overrides: Any) -> ModelConfig:
    """The network `model-info` describes: a preset's model, then a config's (a recipe file or a
    shipped recipe's name: its `model:` section; a file of model fields alone), then the
    overrides given (None: not given)."""
    from ..config import load_recipe_dict

    data: dict[str, Any] = {}
    if preset is not None:
        from .presets import get_preset
        data = dict(get_preset(preset).model)
    if config is not None:
        raw = load_recipe_dict(config)
        data.update(raw.get("model", raw))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig.from_dict(data)


def model_info(cfg: ModelConfig, batch: int = 1) -> dict[str, Any]:
    model = build_model(cfg.replace(pretrained="none"))
    counts = parameter_counts(model)
    return {
        "config": cfg.to_dict(),
        "parameters": counts,
        "parameters_total": sum(counts.values()),
        "gflops": count_flops(model, batch) / 1e9,
        "batch": batch,
        "feature_grid": model.grid,
        "backbone_channels": model.backbone.num_channels,
        "irpe_buckets": num_buckets(cfg.irpe_ratio) if cfg.encoder == "irpe" else 0,
        "preprocess": model.data_config(),
    }


def model_info_table(cfg: ModelConfig, batch: int = 1) -> dict[str, Any]:
    from ..core.console import make_console
    from rich.table import Table

    info = model_info(cfg, batch)
    table = Table(title=f"{cfg.backbone} @ {cfg.image_size}px, {cfg.num_classes} classes, "
                        f"encoder={cfg.encoder}, decoder self-attn={cfg.decoder_self_attn}")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for part, n in info["parameters"].items():
        table.add_row(part, f"{n / 1e6:,.3f} M")
    table.add_row("total", f"{info['parameters_total'] / 1e6:,.3f} M", style="bold")
    console = make_console()
    console.print(table)
    h, w = info["feature_grid"]
    console.print(f"GFLOPs (forward, batch {batch}): {info['gflops']:.2f}")
    console.print(f"feature grid: {h}x{w} = {h * w} tokens of {info['backbone_channels']} channels "
                  f"-> d_model {cfg.d_model}, {cfg.nhead} heads")
    if cfg.encoder == "irpe":
        console.print(f"iRPE: {info['irpe_buckets']} buckets (ratio {cfg.irpe_ratio}, "
                      f"on {cfg.irpe_on}, {'shared' if cfg.irpe_shared_head else 'per-head'} tables)")
    pre = info["preprocess"]
    console.print(f"preprocess: resize to {pre['image_size']}x{pre['image_size']} "
                  f"({pre['interpolation']}), mean {pre['mean']}, std {pre['std']}")
    return info


def preset_rows() -> tuple[list[dict[str, Any]], str | None]:
    """One row per preset: its architecture, parameters, GFLOPs (batch 1) and the CPU images/s
    measured by benchmarks/preset_speed.py (mlic_edge/resources/preset_speed.json), if any."""
    import json
    from importlib import resources

    from .presets import PRESETS

    measured: dict[str, Any] = {}
    speed_file = resources.files("mlic_edge") / "resources" / "preset_speed.json"
    if speed_file.is_file():
        measured = json.loads(speed_file.read_text())
    rows = []
    for preset in PRESETS.values():
        cfg = preset.config(num_classes=20).replace(pretrained="none")
        model = build_model(cfg)
        rows.append({"name": preset.name, "about": preset.about, "config": cfg,
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "gflops": count_flops(model) / 1e9, **measured.get("presets", {}).get(preset.name, {})})
    return rows, measured.get("machine")


def presets_table() -> list[dict[str, Any]]:
    from ..core.console import make_console
    from rich.table import Table

    rows, machine = preset_rows()
    table = Table(title="model presets (mlic-edge train --preset NAME); 20 classes; images/s from the "
                        "machine named below")
    for column in ("name", "backbone @ px", "head", "params", "GFLOPs", "train img/s", "infer img/s"):
        table.add_column(column, justify="left" if column in ("name", "backbone @ px", "head") else "right",
                         no_wrap=True)
    for row in rows:
        cfg = row["config"]
        table.add_row(row["name"], f"{cfg.backbone.removeprefix('tf_efficientnet_')} @ {cfg.image_size}",
                      f"{cfg.d_model}/{cfg.nhead}/{cfg.dim_feedforward}", f"{row['parameters'] / 1e6:.1f} M",
                      f"{row['gflops']:.1f}", f"{row['train_img_s']:.1f}" if "train_img_s" in row else "-",
                      f"{row['infer_img_s']:.1f}" if "infer_img_s" in row else "-")
    console = make_console()
    if console.width < 100:   # the table needs ~90 columns; narrower output would truncate names
        console = make_console(width=100)
    console.print(table)
    console.print("head: d_model / heads / FFN width. " + "; ".join(f"{row['name']}: {row['about']}" for row in rows))
    if machine:   # one measurement on one machine: a user reads it as theirs unless told
        console.print(f"images/s: measured once on {machine} (benchmarks/preset_speed.py), not on this "
                      f"machine; rerun that script for yours")
    return rows
