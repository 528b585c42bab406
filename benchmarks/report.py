#!/usr/bin/env python3
"""Render the tables of measured figures in README.md and docs/ from committed result files.

    python benchmarks/report.py            # rewrite every block from its result file
    python benchmarks/report.py --check    # exit 1 when a block differs from its rendering (CI)

A block in a markdown file is

    <!-- result benchmarks/results/DATE-NAME/FILE.json table=NAME [key=value ...] -->
    (what the renderer `NAME` of benchmarks/tables.py makes, then the provenance line)
    <!-- end result -->

The provenance line names the result file, the machine, the command and the commit, all read from
the result file. A figure typed into a block by hand fails `--check`.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tables  # noqa: E402  (registers the renderers)
from result_files import REPO, describe_machine, read_result  # noqa: E402

# markers start their line: an indented example of the syntax is not a block
BLOCK = re.compile(r"^(<!-- result (?P<spec>[^>\n]*?) -->\n)(?P<body>.*?)^(<!-- end result -->)", re.S | re.M)
REQUIRED = ("command", "commit", "date", "machine", "runs")


class ReportError(Exception):
    pass


def _parse_spec(spec: str, where: str) -> tuple[Path, str, dict]:
    path, *options = spec.split()
    pairs = dict(option.split("=", 1) for option in options if "=" in option)
    return REPO / path, pairs.pop("table", ""), pairs


def provenance(path: Path, result: dict) -> str:
    commit = (result.get("commit") or "unknown")[:10] + (" with local changes" if result.get("dirty") else "")
    rebuilt = "; header reconstructed after the run" if result.get("reconstructed") else ""
    return (f"*Result file `{shown(path)}`, measured {result['date'][:10]} on "
            f"{describe_machine(result['machine'])}, commit {commit}{rebuilt}: `{result['command']}`*")


def render_block(spec: str, where: str) -> str:
    path, name, options = _parse_spec(spec, where)
    if not path.is_file():
        raise ReportError(f"{where}: result file {shown(path)} does not exist")
    result = read_result(path)
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise ReportError(f"{where}: {shown(path)} lacks {', '.join(missing)}")
    if name not in tables.TABLES:
        raise ReportError(f"{where}: unknown table {name!r} (known: {', '.join(sorted(tables.TABLES))})")
    body = tables.TABLES[name](result, **options).rstrip("\n")
    return f"{body}\n\n{provenance(path, result)}\n"


def render_file(path: Path) -> str:
    text = path.read_text()

    def replace(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        body = render_block(match["spec"], f"{shown(path)}:{line}")
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, text)


def shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on a difference")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    stale = []
    for path in [p.resolve() for p in args.files] or markdown_files():
        try:
            rendered = render_file(path)
        except ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        current = path.read_text()
        if rendered == current:
            continue
        if args.check:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), rendered.splitlines(True), str(path), "rendered", n=0))
        else:
            path.write_text(rendered)
            print(f"rendered {shown(path)}")
    if stale:
        print(f"{len(stale)} file(s) differ from their result files: run python benchmarks/report.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
