"""`print_bench` for `cli/quickstart.py`, which imports it from here; the verbs live in
cli/infer.py, cli/bench.py and cli/doctor.py, and this module registers none."""
from __future__ import annotations

from .bench import print_bench

__all__ = ["print_bench"]
