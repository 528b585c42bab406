"""The `mlic-edge ...` line that does what a library call does, written from the same keyword
arguments the call gets.

The quickstart prints each step's command before it runs the step. Rendering the line from the
command's own click parameters (its Python names are the library's keyword names) means the
printed line and the call cannot drift apart: an option the command does not have is an error,
and `parse` reads a line back into the keyword arguments it stands for.
"""
from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any


@functools.cache
def _group():
    """The click group of the whole CLI, built once (every stage has registered by then:
    importing this module imports the `cli` package first)."""
    import typer

    from .app import app

    return typer.main.get_command(app)


def _command(verb: str):
    return _group().commands[verb]


def _option_words(param, value: Any) -> list[str]:
    """The words that give `param` the value `value` (none when it is the default)."""
    if value == param.default or value is None:
        return []
    flag = next(o for o in param.opts if o.startswith("--"))
    if param.is_flag:
        if value:
            return [flag]
        return [param.secondary_opts[0]] if param.secondary_opts else []
    values = list(value) if param.multiple else [value]
    return [word for v in values for word in (flag, str(v))]


def render(verb: str, *arguments: Any, **options: Any) -> str:
    """'mlic-edge VERB ARG... --flag value ...' for `verb` called with these positional arguments
    and keyword options; KeyError names an option the command lacks."""
    command = _command(verb)
    params = {p.name: p for p in command.params}
    words = ["mlic-edge", verb] + [str(a) for a in arguments]
    for name, value in options.items():
        if name not in params or params[name].param_type_name != "option":
            raise KeyError(f"mlic-edge {verb} has no option for {name!r}")
        words += _option_words(params[name], value)
    return " ".join(shlex.quote(w) for w in words)


def parse(line: str) -> dict[str, Any]:
    """The parameters (every one, defaults included) that `line` gives its command."""
    words = shlex.split(line)
    command = _command(words[1])
    with command.make_context(words[1], words[2:], resilient_parsing=True) as context:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in context.params.items()}


def run_line(line: str) -> int:
    """Run `line` ('mlic-edge VERB ...') in this process, exactly as the shell would; its exit code.
    An MLICError propagates (the caller prints it as one line)."""
    words = shlex.split(line)
    code = _group().main(args=words[1:], prog_name=words[0], standalone_mode=False)
    return code if isinstance(code, int) else 0
