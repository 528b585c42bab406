"""The TensorRT code is written against the real TensorRT 11.4 API, checked without TensorRT.

No machine here has TensorRT, so this test reads our TensorRT modules' source (AST): every attribute
used on a TensorRT object (anything reached from the `tensorrt` module: trt.Builder(...) ->
builder -> builder.create_network(...) -> network ...) must be a name bound by the TensorRT 11.4
Python bindings (tests/resources/tensorrt_bindings_names.txt, extracted from the
tensorrt-cu13-bindings wheel by scripts/extract_trt_names.py) or be in ALLOWLIST with a reason.
A second check greps all our Python source (code only, not comments/strings) for the APIs
TensorRT 11 removed. Both checkers are themselves tested on snippets that use removed APIs.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMES_FILE = REPO / "tests" / "resources" / "tensorrt_bindings_names.txt"
# Modules that touch TensorRT objects (engine build, engine runtime).
TRT_MODULES = [REPO / "mlic_edge" / "export" / "engine.py", REPO / "mlic_edge" / "runtime" / "tensorrt_backend.py",
               REPO / "mlic_edge" / "tensorrt" / "plugin.py", REPO / "mlic_edge" / "tensorrt" / "runtimes.py"]
# Names used on TensorRT objects that are not in the extracted list, each with why it is right.
ALLOWLIST = {
    "serialize": "ITimingCache.serialize(): documented in the TensorRT 11.4 Python API (see "
                 "docs/deployment.md, 'Still present in 11.4'); too short to survive in the "
                 "wheel's string table, which scripts/extract_trt_names.py reads",
}
# TensorRT for RTX's own names (tensorrt/runtimes.py, used only when runtime.is_rtx), checked
# against the installed tensorrt_rtx bindings by test_rtx_only_names_exist_in_tensorrt_rtx.
RTX_ONLY = {"ComputeCapability", "CURRENT", "num_compute_capabilities", "set_compute_capability",
            "create_runtime_config", "create_runtime_cache", "set_runtime_cache", "deserialize"}
# The core of the API we rely on: the checker must see these (else it checks nothing).
MUST_SEE = {"Builder", "create_network", "OnnxParser", "parse_from_file", "create_builder_config",
            "create_optimization_profile", "set_shape", "add_optimization_profile", "set_memory_pool_limit",
            "create_timing_cache", "set_timing_cache", "build_serialized_network", "Runtime",
            "deserialize_cuda_engine", "num_io_tensors", "get_tensor_name", "get_tensor_mode",
            "get_tensor_profile_shape", "create_execution_context", "set_input_shape", "set_tensor_address",
            "execute_async_v3", "STRONGLY_TYPED", "__version__",
            # the IRPEAttention plugin (tensorrt.plugin): decorators, launch parameters, descriptors
            "PREFER_AOT_PYTHON_PLUGINS", "register", "impl", "aot_impl", "autotune", "TensorDesc",
            "AutoTuneCombination", "KernelLaunchParams", "SymIntExprs", "SymInt32", "cdiv", "like",
            "shape_expr", "is_constant", "constant_value", "grid_x", "grid_y", "block_x", "shared_mem"}
# Removed in TensorRT 11 (docs/deployment.md): never in our code, whatever the version.
REMOVED_PATTERNS = [
    r"BuilderFlag\s*\.\s*(FP16|INT8|BF16|FP8|INT4|FP4)\b",
    r"\bint8_calibrator\b",
    r"\bIInt8\w*Calibrator\w*",
    r"\bCalibrationAlgoType\b",
    r"\bEXPLICIT_BATCH\b",
    r"\bexecute_async_v2\b",
    r"\bnum_bindings\b",
    r"\bset_output_type\b",
    r"\blayer\s*\.\s*precision\b",
    r"\b(OBEY|PREFER)_PRECISION_CONSTRAINTS\b",
]


def trt_names() -> set[str]:
    lines = NAMES_FILE.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


# ----------------------------------------------------------------------------------- checkers
class _TrtUses(ast.NodeVisitor):
    """Taint analysis over one module: names/`self.x` assigned from expressions rooted at the
    tensorrt module are TensorRT objects; attributes accessed on them are collected."""

    def __init__(self, tree: ast.AST):
        # `trt` is our alias of the TensorRT module everywhere (tensorrt or tensorrt_rtx), `trtp` of its
        # plugin API, `engine` / `self.engine` / `self.context` the engine and execution context.
        self.names: set[str] = {"trt", "trtp", "engine"}
        self.self_attrs: set[str] = {"trt", "engine", "context"}
        for node in ast.walk(tree):               # import tensorrt[.plugin] [as x]
            if isinstance(node, ast.Import):
                self.names |= {a.asname or a.name for a in node.names if a.name.split(".")[0] == "tensorrt"}
        for node in ast.walk(tree):               # parameters annotated with a TensorRT type (q: trtp.TensorDesc)
            if isinstance(node, ast.FunctionDef):
                self.names |= {a.arg for a in node.args.args + node.args.kwonlyargs
                               if a.annotation is not None and self.tainted(a.annotation)}
        changed = True
        while changed:                            # propagate through assignments to a fixpoint
            changed = False
            for node in ast.walk(tree):
                targets, value = self._assignment(node)
                if value is None or not self.tainted(value):
                    continue
                for target in targets:
                    for leaf in (target.elts if isinstance(target, ast.Tuple) else [target]):
                        if isinstance(leaf, ast.Name) and leaf.id not in self.names:
                            self.names.add(leaf.id)
                            changed = True
                        elif self._is_self_attr(leaf) and leaf.attr not in self.self_attrs:
                            self.self_attrs.add(leaf.attr)
                            changed = True
        self.uses: dict[str, list[int]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not _is_self(node.value) and self.tainted(node.value):
                self.uses.setdefault(node.attr, []).append(node.lineno)

    @staticmethod
    def _assignment(node):
        if isinstance(node, ast.Assign):
            return node.targets, node.value
        if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
            return [node.target], node.value
        if isinstance(node, ast.withitem) and node.optional_vars is not None:
            return [node.optional_vars], node.context_expr
        return [], None

    @staticmethod
    def _is_self_attr(node) -> bool:
        return isinstance(node, ast.Attribute) and _is_self(node.value)

    def tainted(self, node) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.names
        if isinstance(node, ast.Attribute):
            if _is_self(node.value):
                return node.attr in self.self_attrs
            return self.tainted(node.value)
        if isinstance(node, (ast.Call,)):
            return self.tainted(node.func)
        if isinstance(node, ast.Subscript):
            return self.tainted(node.value)
        return False


def _is_self(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def trt_attribute_uses(source: str) -> dict[str, list[int]]:
    """{attribute: [line, ...]} of every attribute used on a TensorRT object in `source`."""
    return _TrtUses(ast.parse(source)).uses


def unknown_trt_attributes(source: str, known: set[str]) -> dict[str, list[int]]:
    return {name: lines for name, lines in trt_attribute_uses(source).items()
            if name not in known and name not in ALLOWLIST and name not in RTX_ONLY}


def code_only(source: str) -> str:
    """The source's tokens without comments and string literals (docstrings may name removed APIs)."""
    skip = {tokenize.COMMENT, tokenize.STRING}
    skip |= {getattr(tokenize, name) for name in ("FSTRING_MIDDLE",) if hasattr(tokenize, name)}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return " ".join(tok.string for tok in tokens if tok.type not in skip)


def removed_api_uses(source: str) -> list[str]:
    code = code_only(source)
    return [match.group(0) for pattern in REMOVED_PATTERNS for match in re.finditer(pattern, code)]


SNIPPET = '''
import tensorrt as trt
"""A docstring may mention BuilderFlag.FP16 and execute_async_v2 freely."""
def build(onnx):
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)      # removed in 11
    config.int8_calibrator = object()
    layer = network.get_layer(0)
    layer.precision = trt.int8
    layer.set_output_type(0, trt.int8)
    return builder.build_engine_typo(network, config)

class Runner:
    def __init__(self, engine):
        self.ctx = trt.Runtime(trt.Logger()).deserialize_cuda_engine(engine).create_execution_context()
    def run(self, stream):
        n = self.ctx.engine.num_bindings
        self.ctx.execute_async_v2([], stream)
'''


# ----------------------------------------------------------------------------------- tests
def test_checker_catches_removed_and_unknown_names():
    unknown = unknown_trt_attributes(SNIPPET, trt_names())
    for name in ("EXPLICIT_BATCH", "FP16", "int8_calibrator", "precision", "set_output_type", "build_engine_typo",
                 "num_bindings", "execute_async_v2"):
        assert name in unknown, name
    # names that do exist in 11.4 are not flagged
    for name in ("Builder", "create_network", "get_layer", "create_execution_context", "deserialize_cuda_engine"):
        assert name not in unknown
    found = " ".join(removed_api_uses(SNIPPET))
    for needle in ("BuilderFlag . FP16", "EXPLICIT_BATCH", "int8_calibrator", "layer . precision", "set_output_type",
                   "num_bindings", "execute_async_v2"):
        assert needle in found, needle
    assert "mention" not in found  # the docstring is not code


def test_names_file_is_the_11_4_bindings_list():
    names = trt_names()
    assert "11.4" in NAMES_FILE.read_text().splitlines()[0]
    assert len(names) > 1500 and {"execute_async_v3", "set_tensor_address", "build_serialized_network"} <= names
    # the removed APIs really are absent from 11.4, so using them would be caught
    assert not {"execute_async_v2", "num_bindings", "int8_calibrator", "EXPLICIT_BATCH", "set_output_type"} & names


@pytest.mark.parametrize("module", TRT_MODULES, ids=lambda p: p.name)
def test_trt_modules_use_only_tensorrt_11_names(module):
    unknown = unknown_trt_attributes(module.read_text(), trt_names())
    assert not unknown, f"{module.name}: attributes not in the TensorRT 11.4 bindings: {unknown}"


def test_checker_sees_the_whole_trt_layer():
    seen: set[str] = set()
    for module in TRT_MODULES:
        seen |= set(trt_attribute_uses(module.read_text()))
    assert MUST_SEE <= seen, f"checker missed: {sorted(MUST_SEE - seen)}"
    assert set(ALLOWLIST) <= seen, f"stale allowlist entries: {sorted(set(ALLOWLIST) - seen)}"


def test_rtx_only_names_exist_in_tensorrt_rtx():
    """The names TensorRT for RTX adds are real: each is bound somewhere in its module."""
    rtx = pytest.importorskip("tensorrt_rtx")
    bound = set(dir(rtx))
    for name in dir(rtx):
        bound |= set(dir(getattr(rtx, name)))
    assert RTX_ONLY <= bound, sorted(RTX_ONLY - bound)
    seen = set(trt_attribute_uses((REPO / "mlic_edge" / "tensorrt" / "runtimes.py").read_text()))
    assert RTX_ONLY <= seen | set(trt_attribute_uses((REPO / "mlic_edge" / "runtime" / "tensorrt_backend.py").read_text())), \
        "stale RTX_ONLY entries"


def test_no_removed_tensorrt_api_anywhere():
    files = sorted((REPO / "mlic_edge").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
    hits = {str(f.relative_to(REPO)): uses for f in files if (uses := removed_api_uses(f.read_text()))}
    assert not hits, f"APIs removed in TensorRT 11: {hits}"
    shell = REPO / "scripts" / "gpu_selfcheck.sh"
    if shell.is_file():  # trtexec precision flags are gone in 11 too
        code = "\n".join(line.split("#", 1)[0] for line in shell.read_text().splitlines())
        assert not re.search(r"trtexec\b.*--(fp16|int8|bf16)\b", code)


def test_tensorrt_imported_lazily():
    for module in TRT_MODULES:
        tree = ast.parse(module.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top for a in n.names} | {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not {"tensorrt", "torch", "pycuda"} & names, module.name
    sources = "".join(f.read_text() for f in (REPO / "mlic_edge").rglob("*.py"))
    assert "import pycuda" not in sources and "from cuda import cudart" not in sources
