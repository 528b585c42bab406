"""What the CPU benchmarks put in their result files' summaries, on hand-computed cases.

The docs' tables are rendered from these summaries (benchmarks/tables.py), so the rules behind
them are checked here: the ratio of a round is taken within the round, and medians are per preset
and phase.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import infer_throughput  # noqa: E402
import preset_speed  # noqa: E402


def test_infer_ratio_is_the_median_of_each_rounds_ratio():
    rounds = [{"bare_img_s": 100.0, "pipeline_img_s": 50.0, "decode_img_s": 300.0},   # 0.5
              {"bare_img_s": 200.0, "pipeline_img_s": 180.0, "decode_img_s": 100.0},  # 0.9
              {"bare_img_s": 50.0, "pipeline_img_s": 40.0, "decode_img_s": 200.0}]    # 0.8
    summary = infer_throughput.summarise(rounds)
    assert summary["median_bare_img_s"] == 100.0
    assert summary["median_pipeline_img_s"] == 50.0
    assert summary["median_decode_img_s"] == 200.0
    assert summary["median_ratio"] == pytest.approx(0.8)   # the ratio of the medians would be 0.5


def test_preset_speed_medians_per_preset_and_phase():
    runs = [{"preset": "a", "phase": "train", "batch": 32, "img_s": rate} for rate in (3.0, 1.0, 2.0)]
    runs += [{"preset": "a", "phase": "infer", "batch": 32, "img_s": rate} for rate in (10.0, 30.0)]
    runs += [{"preset": "b", "phase": "train", "batch": 4, "img_s": 0.5},
             {"preset": "b", "phase": "infer", "batch": 4, "img_s": 2.0}]
    presets = preset_speed.summarise(runs)["presets"]
    assert presets == {"a": {"batch": 32, "train_img_s": 2.0, "infer_img_s": 20.0},
                       "b": {"batch": 4, "train_img_s": 0.5, "infer_img_s": 2.0}}
