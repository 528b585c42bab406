"""mlic_edge/resources/preset_speed.json, what `mlic-edge model-info --list` shows, is made from the
committed result file it names (benchmarks/preset_speed.py)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from mlic_edge.model.presets import PRESETS

REPO = Path(__file__).resolve().parent.parent
RESOURCE = REPO / "mlic_edge" / "resources" / "preset_speed.json"


def test_the_resource_names_a_committed_result_file_of_every_preset():
    resource = json.loads(RESOURCE.read_text())
    result = json.loads((REPO / resource["result"]).read_text())
    assert result["name"] == "preset_speed"
    assert set(resource["presets"]) == set(PRESETS) == {run["preset"] for run in result["runs"]}
    assert result["date"][:10] in resource["machine"]


def test_the_resource_holds_the_medians_of_the_timed_steps():
    resource = json.loads(RESOURCE.read_text())
    runs = json.loads((REPO / resource["result"]).read_text())["runs"]
    for name, row in resource["presets"].items():
        mine = [run for run in runs if run["preset"] == name]
        assert row["batch"] == mine[0]["batch"]
        for phase in ("train", "infer"):
            rates = [run["img_s"] for run in mine if run["phase"] == phase]
            assert len(rates) >= 1
            assert row[f"{phase}_img_s"] == round(statistics.median(rates), 2), (name, phase)
