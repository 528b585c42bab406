"""mkdocs hook: the support matrix page is generated from mlic_edge/core/capabilities.py at build
time, so the docs can never list a format, precision, target, runtime or device kind the code does
not have. A page holding the marker `<!-- capabilities -->` gets the tables in its place.

capabilities.py imports neither torch nor numpy, so the docs build needs only mkdocs and this tree.
"""
from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- capabilities -->"
ROOT = Path(__file__).resolve().parents[1]


def _capabilities():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from mlic_edge.core import capabilities

    return capabilities


def _code(values) -> str:
    return ", ".join(f"`{v}`" for v in values) if values else ""


def _cell(value) -> str:
    """A table cell: pipes escaped; angle brackets outside code spans shown, not parsed as HTML."""
    text = str(value).replace("|", "\\|")
    return text if text.startswith("`") else text.replace("<", "&lt;").replace(">", "&gt;")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _runs_on(runtime) -> str:
    if runtime.runs_on is None:
        return "the GPU it was built on"
    return f"{_code(runtime.runs_on)} (default build: {_code(runtime.portable_default)})"


def capability_tables() -> str:
    """The support matrix as markdown: one table per capability table of the code."""
    caps = _capabilities()
    sections = [
        ("Model files", ("format", "suffixes", "backend", "metadata in", "needs a GPU", "written by", "install"),
         [(f"`{f.name}`", _code(f.suffixes), f.backend, f.metadata_in, _yes(f.needs_gpu), f"`{f.written_by}`",
           f"`{f.install}`") for f in caps.MODEL_FORMATS.values()]),
        ("Precisions", ("precision", "what it is", "parity passes up to (delta mAP, points)"),
         [(f"`{p.name}`", p.about, p.parity_limit) for p in caps.PRECISIONS.values()]),
        ("Export targets", ("--target", "made for", "build-engine takes it"),
         [(f"`{t.name}`", t.about, _yes(t.engine_ok)) for t in caps.EXPORT_TARGETS.values()]),
        ("TensorRT runtimes", ("--runtime", "module", "builds without a GPU", "runs on (compute capability)",
                               "IRPEAttention plugin", "install"),
         [(f"`{r.name}` ({r.label})", f"`{r.module}`", _yes(r.builds_without_gpu), _runs_on(r),
           _yes(r.takes_plugins), f"`{r.install}`") for r in caps.ENGINE_RUNTIMES.values()]),
        ("Devices", ("--device", "takes :N", "needs a GPU", "model formats", "what it means"),
         [(f"`{d.name}`", _yes(d.indexed), _yes(d.needs_gpu), _code(d.formats), d.about)
          for d in caps.DEVICE_KINDS.values()]),
    ]
    parts = [f"### {title}\n\n{_table(header, rows)}" for title, header, rows in sections]
    parts.append(f"`build-engine --runtime` takes {_code(caps.RUNTIME_CHOICES)}; `auto` picks "
                 f"{caps.ENGINE_RUNTIMES['tensorrt'].label} where it imports and a GPU exists, else "
                 f"{caps.ENGINE_RUNTIMES['tensorrt-rtx'].label}. "
                 f"`mlic-edge train --device` takes {_code(caps.TRAIN_DEVICE_KINDS)}.")
    return "\n\n".join(parts) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs event: replace the marker with the generated tables."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, capability_tables())
