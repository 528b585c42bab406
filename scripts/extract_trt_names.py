#!/usr/bin/env python3
"""Regenerate tests/resources/tensorrt_bindings_names.txt from the TensorRT Python bindings wheel.

The wheel cannot be imported without TensorRT's libraries, but its compiled module lists every
bound name as a string, and its docstrings cross-reference the classes. Usage:

    pip download --no-deps tensorrt-cu13-bindings==11.4.0.106 -d /tmp/trt
    python scripts/extract_trt_names.py /tmp/trt/tensorrt_cu13_bindings-11.4.0.106-*.whl

Names of up to ~7 characters (enum values such as INPUT, class names such as Builder) may be
inlined into machine code and missing from the strings; they are taken from the docstrings'
cross-references or listed in SHORT_NAMES below, each checked against the TensorRT Python API docs.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "resources" / "tensorrt_bindings_names.txt"

# Documented in the TensorRT Python API reference (tensorrt.TensorIOMode, tensorrt.Logger.Severity,
# tensorrt.DataType, top-level classes), short enough to be inlined.
SHORT_NAMES = ["Builder", "Runtime", "Logger", "INPUT", "OUTPUT", "NONE", "ERROR", "INTERNAL_ERROR",
               "HALF", "FLOAT", "INT32", "INT64", "BOOL", "UINT8", "BF16", "FP8", "INT8", "INT4"]


def main(wheel: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(wheel).extractall(tmp)
        so = next(Path(tmp).rglob("tensorrt.so"))
        text = subprocess.run(["strings", "-n", "3", str(so)], check=True, capture_output=True,
                              text=True).stdout
        # Identifiers only; C++ mangled symbols (_Z...) and short machine-code noise are not names.
        names = {s for s in text.splitlines() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s)
                 and not s.startswith("_Z") and (len(s) > 4 or s.isidentifier() and s.islower())}
        names |= set(re.findall(r"`(?:~?tensorrt\.)?([A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_]\w*)*`", text))
        for py in Path(tmp).rglob("*.py"):  # pure-Python helpers of the wheel (volume, nptype, plugin API)
            tree = ast.parse(py.read_text())
            names |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            # public instance attributes (tensorrt.plugin.KernelLaunchParams.grid_x, ...)
            names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                      and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
                      and n.value.id == "self" and not n.attr.startswith("_")}
        version = re.search(r'__version__ = "([^"]+)"',
                            next(Path(tmp).rglob("__init__.py")).read_text()).group(1)
    names |= set(SHORT_NAMES)
    header = (f"# Names bound by the TensorRT {version} Python bindings ({Path(wheel).name}),\n"
              f"# extracted by scripts/extract_trt_names.py: identifier strings of tensorrt.so, the\n"
              f"# docstrings' cross-references, the wheel's Python defs, and SHORT_NAMES (see script).\n")
    OUT.write_text(header + "\n".join(sorted(names)) + "\n")
    print(f"{len(names)} names -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
