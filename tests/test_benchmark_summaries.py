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
    pick_variants,
    print_summary,
    scores_from_logs,
    summarise,
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
    assert scores_from_logs([first, second]) == {"base": [96.00, 96.67], "iRPE ratio 3 (exact offsets)": [96.06]}


def test_pick_variants_names_the_unknown_ones():
    table = {"base": {}, "loss bce": {"train.loss": "bce"}}
    assert pick_variants(table, "base, loss bce") == table
    with pytest.raises(SystemExit, match="unknown '8 epochs'; known: base, loss bce"):
        pick_variants(table, "base,8 epochs")
