"""The command line as a whole: every verb's help renders, a flag name means one thing on every
command, and the quickstart's command lines (commandline.render) read back as what they ran."""
from __future__ import annotations

import typing
from collections import defaultdict
from pathlib import Path

import pytest
import typer

from mlic_edge.cli import app
from mlic_edge.cli.commandline import parse, render

COMMANDS = typer.main.get_command(app).commands


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_help_renders(verb, capsys):
    with pytest.raises(SystemExit) as done:
        typer.main.get_command(app).main(args=[verb, "--help"], prog_name="mlic-edge")
    assert done.value.code == 0
    assert "Usage" in capsys.readouterr().out


def test_a_flag_name_has_one_type_on_every_command():
    """A visible flag of the same name takes the same kind of value wherever it appears (the old
    spellings of renamed flags are hidden aliases)."""
    types = defaultdict(set)
    for verb, command in COMMANDS.items():
        hints = typing.get_type_hints(command.callback)
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                for flag in param.opts:
                    types[flag].add(value_type(hints[param.name]))
    assert {flag: kinds for flag, kinds in types.items() if len(kinds) > 1} == {}
    assert "--batch" not in types            # it meant four things; each got its own name


def value_type(hint) -> str:
    """`Optional[int]` -> 'int', `List[str]` -> 'List[str]': what a value of the option is."""
    if hint is Path:          # a path is text on the command line
        return "str"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        return value_type(args[0])
    return getattr(hint, "__name__", str(hint)) if not typing.get_args(hint) else str(hint)


def test_renamed_flags_are_hidden_aliases():
    hidden = {flag for command in COMMANDS.values() for p in command.params if p.hidden for flag in p.opts}
    assert {"--batch", "--fp16", "--int8", "--model"} <= hidden


def test_a_rendered_line_reads_back_as_the_options_it_came_from():
    options = {"out": "m.onnx", "precision": "int8", "calib_data": "digits", "calib_images": 32,
               "target": "cpu", "attention": True}
    line = render("export", "runs/best.pt", **options)
    assert line.startswith("mlic-edge export runs/best.pt ")
    params = parse(line)
    assert params["checkpoint"] == "runs/best.pt"
    assert {k: params[k] for k in options} == options


def test_render_refuses_an_option_the_command_lacks():
    with pytest.raises(KeyError, match="with_attention"):
        render("export", "best.pt", with_attention=True)


DEVICE_VERBS = sorted(verb for verb, command in COMMANDS.items()
                      if any("--device" in p.opts for p in command.params))


def placeholders(command) -> list[str]:
    """Values for the command's required arguments and options, so that parsing reaches --device."""
    words = []
    for param in command.params:
        if param.required:
            words += ["placeholder"] if param.param_type_name == "argument" else [param.opts[0], "placeholder"]
    return words


@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
@pytest.mark.parametrize("verb", DEVICE_VERBS)
def test_a_malformed_device_is_one_line_on_every_command(verb, device, capsys):
    from mlic_edge.cli import main

    assert {"train", "eval", "infer", "bench", "serve"} <= set(DEVICE_VERBS)
    with pytest.raises(SystemExit) as done:
        main([verb, *placeholders(COMMANDS[verb]), "--device", device])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err.splitlines() == [f"error: --device {device!r}: unknown device; expected "
                                + err.split("expected ", 1)[1].strip()]
