"""Session-wide test setup.

Without a CUDA GPU the fused iRPE Triton kernels run under Triton's interpreter (numpy on the CPU),
so their forward and backward are checked on every machine. The switch must be set before any
kernel module is imported: `triton.jit` reads it when it decorates.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
