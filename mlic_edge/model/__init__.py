"""The paper's model: timm backbone, iRPE Transformer encoder, cross-attention decoder, heads.

The names are loaded on first use (PEP 562), so `mlic_edge.model.presets` (the named model sizes,
torch-free: the CLI's help reads them) imports without torch.
"""
from importlib import import_module

_EXPORTS = {"Backbone": "backbone", "check_backbone_name": "backbone", "create_timm_model": "backbone", "offline_weights_path": "backbone",
            "remap_efficientnet_lite": "backbone", "IRPE": "irpe", "bucket_ids": "irpe", "num_buckets": "irpe",
            "piecewise_index": "irpe", "GroupWiseLinear": "mlic", "MLICModel": "mlic", "build_model": "mlic"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
