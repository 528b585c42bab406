"""The paper's model: timm backbone, iRPE Transformer encoder, cross-attention decoder, heads."""
from .backbone import (
           Backbone,
           create_timm_model,
           offline_weights_path,
           remap_efficientnet_lite,
)
from .irpe import IRPE, bucket_ids, num_buckets, piecewise_index
from .mlic import GroupWiseLinear, MLICModel, build_model

__all__ = ["Backbone", "GroupWiseLinear", "IRPE", "MLICModel", "build_model", "bucket_ids",
           "create_timm_model", "num_buckets", "offline_weights_path", "piecewise_index",
           "remap_efficientnet_lite"]
