"""mlic-edge: multi-label image classification (iRPE Transformer + APL) from training to the edge.

Subpackages mirror the stages: `model`, `data`, `train`, `export`, `runtime` (which imports
without torch, for edge devices).
"""
__version__ = "0.1.0"
