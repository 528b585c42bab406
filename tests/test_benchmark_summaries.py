"""The verdicts the ablation and small-data benchmarks print (benchmarks/seeded_variants.py).

Those tables are what the README and the issue notes quote ("beyond the seed spread", "same sign
as the paper"), so the rules behind them are checked on hand-computed cases.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from seeded_variants import (
    PAPER_DELTAS,
    add_variant_options,
    pick_variants,
    print_summary,
    runs_from_logs,
    runs_from_results,
    scores_of,
    study_result,
    summarise,
    train_variants,
)


def test_summary_delta_spread_and_paper_sign(capsys):
    scores = {
        "base": [96.0, 96.4],                 # mean 96.2, sd 0.283
        "encoder none": [95.0, 95.2],         # -1.1, beyond 0.141 + 0.283; the paper's sign (-0.50)
        "encoder standard": [96.5, 96.7],     # +0.4, within 0.424; against the paper's sign (-0.32)
        "loss asl": [96.1, 96.3],             # 0.0: no sign to agree with
        "no EMA": [96.0],                     # one seed, not a paper ablation
    }
    rows = {row["setting"]: row for row in summarise(scores)}

    assert rows["base"]["beyond_spread"] is None and rows["base"]["paper_delta"] is None
    none = rows["encoder none"]
    assert none["delta"] == pytest.approx(-1.1)
    assert none["margin"] == pytest.approx(0.1414 + 0.2828, abs=1e-3)
    assert none["beyond_spread"] is True and none["same_sign"] is True
    assert none["paper_delta"] == pytest.approx(84.72 - 85.22)
    standard = rows["encoder standard"]
    assert standard["delta"] == pytest.approx(0.4)
    assert standard["beyond_spread"] is False and standard["same_sign"] is False
    asl = rows["loss asl"]
    assert asl["delta"] == pytest.approx(0.0, abs=1e-9) and asl["same_sign"] is False
    assert rows["no EMA"]["sd"] == 0.0 and rows["no EMA"]["same_sign"] is None

    print_summary(list(rows.values()))
    table = capsys.readouterr().out
    assert "paper delta" in table
    assert "-0.50" in next(line for line in table.splitlines() if line.startswith("encoder none"))


def test_summary_without_paper_ablations_has_no_paper_columns(capsys):
    print_summary(summarise({"base": [96.0, 96.4], "no EMA": [96.0, 96.4]}))
    assert "paper delta" not in capsys.readouterr().out


def method_ablations() -> dict[str, dict[str, float]]:
    """The paper's ablation figures as docs/method.md states them ("Ablations on COCO, ResNet101
    @448: encoder iRPE 85.22 / standard 84.90 / none 84.72; decoder ...; loss ..."), parsed from
    the document: {"encoder": {"iRPE": 85.22, ...}, "decoder self-attention": {...}, "loss": {...}}."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "method.md").read_text()
    sentence = " ".join(re.search(r"Ablations on COCO, ResNet101 @448: (.*?)\. ", text, re.S).group(1).split())
    tables = {}
    for part in sentence.split("; "):
        table = next(name for name in ("encoder", "decoder self-attention", "loss") if part.startswith(name + " "))
        rows = (row.rsplit(" ", 1) for row in part[len(table):].split(" / "))
        tables[table] = {name.strip(): float(value) for name, value in rows}
    return tables


def test_paper_deltas_are_the_method_tables():
    """PAPER_DELTAS against docs/method.md (Tables IV-VI): each variant's row minus its own table's
    row of the full model (iRPE encoder, no decoder self-attention, APL)."""
    tables = method_ablations()
    encoder, decoder, loss = tables["encoder"], tables["decoder self-attention"], tables["loss"]
    assert (encoder["iRPE"], decoder["none"], loss["APL"]) == (85.22, 85.20, 85.20)   # parsed what it should
    from_document = {"encoder standard": encoder["standard"] - encoder["iRPE"],
                     "encoder none": encoder["none"] - encoder["iRPE"],
                     "decoder self-attn all": decoder["all"] - decoder["none"],
                     "loss asl": loss["ASL"] - loss["APL"], "loss bce": loss["BCE"] - loss["APL"]}
    assert PAPER_DELTAS == pytest.approx(from_document, abs=1e-9)


def test_scores_from_logs_later_log_wins(tmp_path):
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text("epoch 1/12  loss 1.0  mAP 50.00\n"
                     "base                       seed 0: mAP 96.25  (454 s)\n"
                     "iRPE ratio 3 (exact offsets) seed 1: mAP 96.06  (2433 s)\n")
    second.write_text("base                       seed 1: mAP 96.67  (786 s)\n"
                      "base                       seed 0: mAP 96.00  (100 s)\n")
    assert scores_of(runs_from_logs([first, second])) == {"base": [96.00, 96.67],
                                                           "iRPE ratio 3 (exact offsets)": [96.06]}


COMMA = "input 128 px for 4 epochs, no augmentation"
TABLE = {"base": {}, "input 128 px for 4 epochs": {"model.image_size": 128, "train.epochs": 4},
         COMMA: {"model.image_size": 128, "train.epochs": 4, "train.randaugment": ""}, "loss bce": {"train.loss": "bce"}}


def parse(argv: list[str]):
    import argparse
    parser = argparse.ArgumentParser()
    add_variant_options(parser, TABLE, ["base", "loss bce"])
    return parser.parse_args(argv)


def test_variants_are_a_list_a_name_with_a_comma_survives_and_duplicates_are_refused():
    args = parse(["--variant", COMMA, "--variant", "base", "--seeds", "0,1,2"])
    assert list(pick_variants(TABLE, args.variants, args.default_variants)) == [COMMA, "base"]
    assert pick_variants(TABLE, args.variants)[COMMA] is TABLE[COMMA] and args.seeds == [0, 1, 2]
    args = parse([])
    assert list(pick_variants(TABLE, args.variants, args.default_variants)) == ["base", "loss bce"]
    assert args.seeds == [0, 1]
    twice = parse(["--variant", "input 128 px for 4 epochs", "--variant", "input 128 px for 4 epochs"])
    with pytest.raises(SystemExit, match="'input 128 px for 4 epochs' given twice"):
        pick_variants(TABLE, twice.variants)
    with pytest.raises(SystemExit, match="unknown '8 epochs'; known: base; input 128 px for 4 epochs; "):
        pick_variants(TABLE, parse(["--variant", "8 epochs"]).variants)
    with pytest.raises(SystemExit):                     # argparse: a seed given twice
        parse(["--seeds", "0,0"])


def test_the_study_record_holds_each_run_as_it_ran(tmp_path, monkeypatch):
    """train_variants with a stand-in for training: each run's record names its variant (commas
    kept), seed and resolved recipe, with the figures of its metrics.jsonl; parts merge once."""
    import json

    import seeded_variants
    from result_files import read_result, write_result

    from mlic_edge.config import Recipe

    def fake_training(recipe, out, show_progress):
        seed = recipe.train.seed
        rows = [{"epoch": 1, "split": "hold-out"}, {"epoch": 2, "split": "hold-out"},
                {"split": "test", "mAP": 90.0 + seed, "CF1": 80.0 + seed, "selection_mAP": 70.0 + seed,
                 "selected_on": "hold-out", "epoch": 2, "stopped": "epochs"}]
        out.mkdir(parents=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(seeded_variants, "train_recipe", fake_training)
    runs = train_variants(Recipe(), pick_variants(TABLE, ["base", COMMA]), [0, 2])
    assert [(r["variant"], r["seed"]) for r in runs] == [("base", 0), ("base", 2), (COMMA, 0), (COMMA, 2)]
    comma = runs[3]
    assert comma["values"] == TABLE[COMMA] and comma["recipe"]["train"]["seed"] == 2
    assert (comma["recipe"]["model"]["image_size"], comma["recipe"]["train"]["randaugment"]) == (128, "")
    assert (comma["test_mAP"], comma["test_CF1"], comma["selection_mAP"], comma["epochs_run"]) == (92.0, 82.0, 72.0, 2)
    assert comma["wall_s"] >= 0 and runs[0]["recipe"]["model"]["image_size"] == Recipe().model.image_size
    result = study_result("study", {"canvas": 128}, runs, summarise(scores_of(runs)))
    assert result["settings"] == {"canvas": 128, "variants": ["base", COMMA], "seeds": [0, 2]}
    write_result(tmp_path / "a.json", result)
    assert scores_of(runs_from_results([tmp_path / "a.json"])) == {"base": [90.0, 92.0], COMMA: [90.0, 92.0]}
    assert read_result(tmp_path / "a.json")["runs"][3]["variant"] == COMMA
    with pytest.raises(SystemExit, match="seed 0 is also in"):
        runs_from_results([tmp_path / "a.json", tmp_path / "a.json"])
