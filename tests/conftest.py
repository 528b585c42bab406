"""Session-wide test setup.

Without a CUDA GPU the fused iRPE Triton kernels run under Triton's interpreter (numpy on the CPU),
so their forward and backward are checked on every machine. The switch must be set before any
kernel module is imported: `triton.jit` reads it when it decorates.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict:
    """The trained tiny model and its exports (tests/tiny_model.py), built once per session."""
    from tiny_model import build_trained_fixture

    return build_trained_fixture(tmp_path_factory.getbasetemp())
