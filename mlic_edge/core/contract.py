"""The tensors every model file mlic-edge writes agrees on.

Input "images": float32 (B, 3, S, S), preprocessed (squash resize + mean/std from the metadata).
Outputs "logits" (B, K) and, optionally, "attention" (B, K, h, w). Which files, precisions and
runtimes exist is `capabilities`' table.
"""
from __future__ import annotations

INPUT_NAME = "images"
