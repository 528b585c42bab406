"""benchmarks/report.py: the docs' tables of measured figures are renderings of committed result files."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "benchmarks" / "report.py"
sys.path.insert(0, str(REPORT.parent))
from report import BLOCK  # noqa: E402


def check(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT), "--check", *map(str, files)],
                          capture_output=True, text=True, cwd=REPO)


def docs_with_blocks() -> list[Path]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [path for path in files if BLOCK.search(path.read_text())]


def test_the_docs_match_their_result_files():
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr


def test_measured_tables_in_the_docs_are_rendered_blocks():
    assert docs_with_blocks(), "no table of the docs is rendered from a result file"


@pytest.mark.parametrize("path", docs_with_blocks(), ids=lambda p: p.name)
def test_a_figure_edited_by_hand_fails_the_check(path, tmp_path):
    text = path.read_text()
    for block in BLOCK.finditer(text):
        table_rows = [m for m in re.finditer(r"^\|.*\d.*\|$", block["body"], re.M)][1:]
        assert table_rows, f"{path.name}: block {block['spec']} has no table row with a figure"
        row = table_rows[-1]
        start = block.start("body") + row.start()
        digit = start + re.search(r"\d", row.group()).start()
        edited = text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1:]
        copy = tmp_path / path.name
        copy.write_text(edited)
        result = check(copy)
        assert result.returncode == 1, f"{path.name}: an edited figure in {block['spec']} passed --check"


def test_a_result_file_without_its_provenance_is_refused(tmp_path):
    result_path = tmp_path / "result.json"
    result_path.write_text(json.dumps({"runs": [], "summary": {}}))
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- result {result_path} table=serve_throughput -->\n<!-- end result -->\n")
    result = check(doc)
    assert result.returncode == 2
    assert "lacks command, commit, date, machine" in result.stderr
