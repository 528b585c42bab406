#!/usr/bin/env python3
"""The H200 study (`bash benchmarks/gpu_study.sh`) as result files: one record per run, read from
the per-run logs the study committed, with a header reconstructed from its study.log.

    python benchmarks/h200_study_records.py     # writes small_runs.json, large_runs.json beside logs.tgz

The study wrote summaries only (small.json, large.json: test mAP per variant, and arguments that
are the summariser's defaults, not what ran). Its logs hold more: per epoch the hold-out ("val")
mAP of the model and of its EMA, the epoch selected and why the run stopped, and the test row of
the selected weights. Each record holds:

  * job: the (set, variant, seed) the study asked for (jobs.tsv) and its log;
  * variant: what the log shows ran. The study's script split its variant argument on commas, so
    the job "input 128 px for 4 epochs, no augmentation" ran two variants, "input 128 px for 4
    epochs" (a second time; its records carry `repeat_of_job`) and "no augmentation"; the
    variant it asked for never ran;
  * epochs: per epoch the hold-out mAP of the model and of the EMA; selection_mAP: the better of
    the two at the selected epoch (what the run was selected on); epochs_run, stopped;
  * test_mAP, test_CF1 (at 0.5), test_CF1_per_class: the test row of the selected weights;
  * finished: false for a run cut by the study's time limit (no test row).

Logs named "...-0 1 2.log" are from an earlier launch that passed the seeds as one word; each
failed at argument parsing before training and is not a run.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

from result_files import RESULTS, write_result
from seeded_variants import PAPER_DELTAS   # the paper's Tables IV-VI (COCO, ResNet101 @448)

STUDY = RESULTS / "h200-study-2026-12-04"
COMMIT = "0d856ae0c4a638a94572ca6cdf13046d9027ccd0"   # the commit that added the study's files
BASES = {"small": "128 px for 12 epochs on 1,000 digits mosaics (data seed 11, 500 test mosaics)",
         "large": "160 px for 3 epochs on 3,000 digits mosaics (data seed 0, 1,000 test mosaics)"}
# how the docs name each variant (the study's own names otherwise)
LABELS = {
    "small": {
        "base": "none: lr 1e-3 for backbone and head, RandAugment m5, EMA, 128 px for 12 epochs, iRPE ratio 1.9",
        "input 160 px for 8 epochs": "160 px input for 8 epochs (same time; what the rule derives)",
        "input 160 px": "160 px input, 12 epochs (1.5 x the time)",
        "input 224 px for 4 epochs": "224 px input, the preset's, for 4 epochs (same time)",
        "input 96 px": "96 px input (below the images' 128)",
        "backbone lr x0.1": "backbone learning rate x0.1 (`train.backbone_lr_scale=0.1`)",
        "label smoothing 0.1": "label smoothing 0.1 (`train.loss_args={label_smoothing: 0.1}`)",
        "RandAugment m9 + Cutout": "the paper's RandAugment m9 + Cutout",
        "iRPE ratio 3 (exact offsets)": "iRPE ratio 3 (every offset of the 4 x 4 grid its own bucket)",
        "no threshold holdout": "all images, the last epoch's EMA, one threshold 0.5 (`train.threshold_holdout=0`)",
        "encoder standard": "encoder: standard self-attention instead of iRPE",
        "encoder none": "encoder: none",
        "decoder self-attn all": "decoder: self-attention in every layer",
        "loss asl": "loss: ASL instead of APL",
        "loss bce": "loss: BCE instead of APL",
    },
    "large": {
        "stop rule without a time limit": "stop rule without a time limit (patience 3, cosine to 30 epochs, 160 px)",
        "base": "fixed count of images seen: 160 px, 3 epochs",
        "no augmentation": "the same without augmentation",
        "input 128 px for 4 epochs": "128 px, 4 epochs",
    },
}

EPOCH = re.compile(r"^epoch (\d+)/(\d+)\s+loss [\d.]+(?:\s+val mAP ([\d.]+))?(?:\s+EMA ([\d.]+))?"
                   r"(?:\s+best ([\d.]+) \((model|ema), epoch (\d+)\))?")
STOPPED = re.compile(r"^stopped after epoch (\d+) \((\w+)\)")
SCORE = re.compile(r"^(.+?)\s+seed (\d+): mAP ([\d.]+)\s+\((\d+) s\)")
CELLS = re.compile(r"^│(.*)│$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def parse_log(text: str) -> list[dict]:
    """The runs of one log, in order: the lines of each run end with its score line."""
    runs, current = [], _empty()
    for line in text.splitlines():
        if match := EPOCH.match(line):
            epoch, _, model, ema, best, weights, best_epoch = match.groups()
            current["epochs"].append({"epoch": int(epoch), "model_mAP": _float(model), "ema_mAP": _float(ema)})
            if best is not None:
                current.update(selection_mAP=float(best), best_weights=weights, best_epoch=int(best_epoch))
            current["max_epochs"] = int(match[2])
        elif match := STOPPED.match(line):
            current.update(epochs_run=int(match[1]), stopped=match[2])
        elif CELLS.match(line.strip()):
            cells = _cells(line)
            if re.fullmatch(r"[\d.]+", cells[0]) and "test_mAP" not in current:   # mAP CP CR CF1 OP OR OF1
                current.update(test_mAP=float(cells[0]), test_CF1=float(cells[3]))
            elif cells[0] == "per-class t":
                current["test_CF1_per_class"] = float(cells[3])
        elif match := SCORE.match(line):
            current.update(variant=match[1].strip(), seed=int(match[2]), elapsed_s=int(match[4]), finished=True)
            if abs(current.get("test_mAP", -1) - float(match[3])) > 0.005:
                raise ValueError(f"score line {line!r} differs from the test table ({current.get('test_mAP')})")
            runs.append(current)
            current = _empty()
    if current["epochs"]:   # cut by the time limit before its test
        current["finished"] = False
        runs.append(current)
    return runs


def _empty() -> dict:
    return {"epochs": [], "finished": False}


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def read_jobs(archive: tarfile.TarFile) -> list[dict]:
    text = archive.extractfile("jobs.tsv").read().decode()
    return [dict(zip(("set", "variant", "seed"), line.split("\t"))) for line in text.splitlines() if line]


def log_name(job: dict) -> str:
    """The study's log file of a job (gpu_study.sh: the variant with every other character a '-')."""
    return f"logs/{job['set']}-{re.sub(r'[^A-Za-z0-9]', '-', job['variant'])}-{job['seed']}.log"


def records(archive: tarfile.TarFile, set_name: str) -> list[dict]:
    """Every run of the set's jobs, in the jobs' order; a repeat of a variant and seed that has a
    job of its own is marked with that job."""
    jobs = [job for job in read_jobs(archive) if job["set"] == set_name]
    asked = {(job["variant"], int(job["seed"])) for job in jobs}
    out = []
    for job in jobs:
        log = log_name(job)
        for run in parse_log(archive.extractfile(log).read().decode()):
            run.setdefault("variant", job["variant"])   # a cut run has no score line: the job's
            run.setdefault("seed", int(job["seed"]))
            record = {"set": set_name, "job_variant": job["variant"], "job_seed": int(job["seed"]), "log": log, **run}
            if run["variant"] != job["variant"] and (run["variant"], run["seed"]) in asked:
                record["repeat_of_job"] = run["variant"]
            out.append(record)
    return out


def header(set_name: str, study_log: str) -> dict:
    runs_line = next(line for line in study_log.splitlines() if line.startswith("runs:"))
    return {
        "name": f"h200-study-{set_name}", "command": "bash benchmarks/gpu_study.sh", "commit": COMMIT, "dirty": None,
        "date": "2026-12-04T18:12:00+00:00",
        "reconstructed": "header written after the run from study.log, jobs.tsv and the per-run logs in logs.tgz "
                         "(python benchmarks/h200_study_records.py); the study recorded no machine details beyond "
                         "the GPU its commit names, no package versions, and the date only in its log timestamps",
        "machine": {"cpu": None, "cores": None, "memory_gib": None, "gpus": [{"name": "NVIDIA H200"}]},
        "packages": {},
        "settings": {"study": set_name, "base": BASES[set_name], "precision": "fp32 (train.amp=off)",
                     "parallel_runs": 12, "study_log": runs_line, "labels": LABELS[set_name],
                     "paper_deltas": PAPER_DELTAS if set_name == "small" else {},
                     "selection": "best epoch and model/EMA by mAP on 10% of the training images held out; "
                                  "test evaluated once on the selected weights"},
        "runs": [], "summary": {},
    }


def main() -> None:
    study_log = (STUDY / "study.log").read_text()
    with tarfile.open(STUDY / "logs.tgz") as archive:
        for set_name in ("small", "large"):
            result = header(set_name, study_log)
            result["runs"] = records(archive, set_name)
            path = write_result(STUDY / f"{set_name}_runs.json", result)
            cut = sum(not run["finished"] for run in result["runs"])
            print(f"{path}: {len(result['runs'])} runs ({cut} cut before the test)")


if __name__ == "__main__":
    main()
