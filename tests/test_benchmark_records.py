"""The records behind the own-data and H200-study tables: what a study log says ran, the
development-data verdicts, the own-data plan's order, and region-mosaics' train/test separation."""
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tables  # noqa: E402
from h200_study_records import log_name, parse_log, records  # noqa: E402
from own_data_rule import read_plan  # noqa: E402

# Two runs in one log, as the comma-split job wrote them: epochs, the stop line, the test table.
TWO_RUNS = """\
epoch 1/4  loss 2.2129  val mAP 69.11  EMA 57.64  best 69.11 (model, epoch 1)  158.0 img/s
epoch 2/4  loss 1.3737  val mAP 95.13  EMA 96.83  best 96.83 (ema, epoch 2)  329.5 img/s
stopped after epoch 2 (epochs): the last of train.epochs 2
┏━━━━━━━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┳━━━━━━━┓
┃         mAP ┃    CP ┃    CR ┃   CF1 ┃    OP ┃    OR ┃   OF1 ┃
┡━━━━━━━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━╇━━━━━━━┩
│       98.49 │ 89.18 │ 96.92 │ 92.89 │ 89.16 │ 96.93 │ 92.89 │
│       top-3 │ 94.10 │ 91.49 │ 92.78 │ 94.14 │ 91.50 │ 92.80 │
│ per-class t │ 95.16 │ 93.52 │ 94.33 │ 95.06 │ 93.60 │ 94.33 │
└─────────────┴───────┴───────┴───────┴───────┴───────┴───────┘
│ 0     │ 99.64 │
input 128 px for 4 epochs  seed 1: mAP 98.49  (59 s)
epoch 1/3  loss 2.0  val mAP 80.00  EMA 70.00  best 80.00 (model, epoch 1)  100.0 img/s
stopped after epoch 1 (patience): validation mAP not improved for 3 epochs
│ 97.10 │ 86.00 │ 90.00 │ 88.00 │ 86.00 │ 90.00 │ 88.00 │
no augmentation            seed 1: mAP 97.10  (101 s)
epoch 1/12  loss 2.4  val mAP 50.00  EMA 40.00  best 50.00 (model, epoch 1)  90.0 img/s
"""


def test_a_log_with_two_variants_gives_two_runs_and_a_cut_one():
    runs = parse_log(TWO_RUNS)
    assert [run["variant"] for run in runs[:2]] == ["input 128 px for 4 epochs", "no augmentation"]
    first, second, cut = runs
    assert first["epochs"] == [{"epoch": 1, "model_mAP": 69.11, "ema_mAP": 57.64},
                               {"epoch": 2, "model_mAP": 95.13, "ema_mAP": 96.83}]
    assert (first["selection_mAP"], first["best_weights"], first["best_epoch"]) == (96.83, "ema", 2)
    assert (first["test_mAP"], first["test_CF1"], first["test_CF1_per_class"]) == (98.49, 92.89, 94.33)
    assert (first["epochs_run"], first["stopped"], first["seed"], first["finished"]) == (2, "epochs", 1, True)
    assert (second["stopped"], second["test_mAP"], second["test_CF1"]) == ("patience", 97.10, 88.00)
    assert "test_CF1_per_class" not in second
    assert cut["finished"] is False and "variant" not in cut and cut["selection_mAP"] == 50.00


def test_a_score_line_that_differs_from_its_test_table_is_refused():
    with pytest.raises(ValueError, match="differs from the test table"):
        parse_log(TWO_RUNS.replace("seed 1: mAP 98.49", "seed 1: mAP 98.59"))


def _archive(tmp_path: Path, jobs: list[tuple[str, str, str]], logs: dict[str, str]) -> tarfile.TarFile:
    path = tmp_path / "logs.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {"jobs.tsv": "".join("\t".join(job) + "\n" for job in jobs), **logs}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return tarfile.open(path)


def test_a_repeat_of_a_variant_with_its_own_job_is_marked(tmp_path):
    own = ("large", "input 128 px for 4 epochs", "1")
    comma = ("large", "input 128 px for 4 epochs, no augmentation", "1")
    comma_log = "logs/large-input-128-px-for-4-epochs--no-augmentation-1.log"
    assert log_name(dict(zip(("set", "variant", "seed"), comma))) == comma_log
    first_run = TWO_RUNS.split("epoch 1/3")[0]
    archive = _archive(tmp_path, [own, comma], {"logs/large-input-128-px-for-4-epochs-1.log": first_run,
                                                comma_log: TWO_RUNS})
    with archive:
        runs = records(archive, "large")
    assert [(run["job_variant"], run["variant"], run.get("repeat_of_job")) for run in runs] == [
        (own[1], own[1], None),
        (comma[1], own[1], own[1]),              # ran again by the comma job: its own job counts
        (comma[1], "no augmentation", None),     # no job of its own: this is its run
        (comma[1], comma[1], None),              # cut before its score line: named by its job
    ]


def _result(study: str, variants: dict[str, list[tuple[float, float]]]) -> dict:
    """A result with (hold-out, test) mAP per seed and variant."""
    runs = [{"variant": name, "finished": True, "selection_mAP": holdout, "test_mAP": test}
            for name, scores in variants.items() for holdout, test in scores]
    return {"settings": {"study": study}, "runs": runs}


def test_the_decisions_table_judges_on_the_hold_out(monkeypatch):
    monkeypatch.setitem(tables.DECISIONS, "probe", [
        ("take the variant", "data", "better", "variant"),
        ("keep the base", "data", "better", "base"),
        ("keep the base, close", "data", "close", "base"),
        ("keep the base, no hold-out", "data", "no holdout", "base"),
    ])
    result = _result("probe", {
        "base": [(90.0, 80.0), (91.0, 81.0)],        # hold-out mean 90.5, sd 0.707
        "better": [(93.0, 80.0), (94.0, 79.0)],      # hold-out +3.0 > 0.707 + 0.707; test -1.0
        "close": [(91.0, 85.0), (92.0, 85.0)],       # hold-out +1.0: above one sd (0.707), below both (1.414)
        "no holdout": [(None, 82.0), (None, 82.0)],
    })
    rows = [line.split(" | ") for line in tables.TABLES["decisions"](result).splitlines()[2:]]
    assert [(row[3], row[4], row[5].rstrip(" |")) for row in rows] == [
        ("-1.00", "+3.00 (beyond the spread)", "yes"),
        ("-1.00", "+3.00 (beyond the spread)", "no"),
        ("+4.50", "+1.00", "open: leans the other way (within the seed spread)"),
        ("+1.50", "-", "not checkable: the variant holds nothing out"),
    ]


def test_the_plan_runs_seed_major_and_pairs_data_seeds_with_seeds(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("images: {train: 10}\nsets:\n"
                    "  - {set: photos, data_seeds: [0, 0, 0], seeds: [0, 1, 2]}\n"
                    "  - {set: digits, data_seeds: [1, 2], seeds: [0, 1]}\n")
    images, runs = read_plan(plan)
    assert images == {"train": 10, "test": 1000, "canvas": 128}
    assert [(run["set"], run["data_seed"], run["seed"]) for run in runs] == [
        ("photos", 0, 0), ("digits", 1, 0), ("photos", 0, 1), ("digits", 2, 1), ("photos", 0, 2)]
    plan.write_text("sets:\n  - {set: digits, data_seeds: [1, 2], seeds: [0]}\n")
    with pytest.raises(SystemExit, match="differ in length"):
        read_plan(plan)


def test_region_mosaics_cut_train_and_test_from_separate_columns(tmp_path):
    from PIL import Image
    from region_mosaics import CLASSES, _write_set

    # every class image: dark texture in its left 70% of columns, bright texture in the rest; the
    # jitter (contrast, brightness, tint) keeps the two apart (at most ~103 against at least ~114)
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.uniform(0, 60, (200, 140, 3)), rng.uniform(200, 255, (200, 60, 3))], axis=1)
    _write_set(tmp_path, {"seed": 0, "n_train": 40, "n_test": 40, "canvas": 64},
               {name: image.astype(np.float32) for name in CLASSES})
    for split, inside in (("train", lambda pixels: pixels.max() <= 108), ("test", lambda pixels: pixels.min() >= 108)):
        for path in sorted((tmp_path / split).glob("*.png")):
            assert inside(np.asarray(Image.open(path))), f"{split}/{path.name} has pixels of the other split's columns"
