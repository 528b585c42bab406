#!/usr/bin/env python3
"""Training and inference images/s of every model preset on this machine, for `model-info --list`.

    python benchmarks/preset_speed.py                      # result file + mlic_edge/resources/preset_speed.json
    python benchmarks/preset_speed.py --presets lite0-224 --out /tmp/speed.json --no-resource
    python benchmarks/preset_speed.py --resource-from benchmarks/results/DATE-preset_speed/preset_speed.json

Training: the trainer's step (APL loss, AdamW, channels_last) at batch --batch (ResNet101 @448:
--big-batch, it needs GBs per image on a CPU), random images, 20 classes. Inference: eval mode,
no_grad, same batch. Median images/s over --repeats timed rounds after --warmup untimed ones; a
round runs every preset's steps in turn (all models are built first). Random weights: speed does
not depend on them. Every timed step goes to the result file --out; the resource that
`mlic-edge model-info --list` reads is written from that result file's medians (--resource-from
rewrites it from a committed result file without measuring).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from result_files import REPO, new_result, read_result, result_dir, write_result

NAME = "preset_speed"
RESOURCE = REPO / "mlic_edge" / "resources" / "preset_speed.json"


def make_steps(name: str, args) -> tuple[int, dict]:
    """The batch and the training and inference steps of one preset, on random images."""
    import torch

    from mlic_edge.losses import build_loss
    from mlic_edge.model import build_model
    from mlic_edge.model.presets import PRESETS

    torch.manual_seed(0)
    cfg = PRESETS[name].config(num_classes=20).replace(pretrained="none")
    batch = args.big_batch if cfg.image_size >= 448 else args.batch
    model = build_model(cfg).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = build_loss("apl")
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, cfg.num_classes) < 0.2).float()

    def train_step():
        model.train()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step():
        model.eval()
        with torch.no_grad():
            model(x)

    return batch, {"train": train_step, "infer": infer_step}


def measure(names: list[str], args) -> list[dict]:
    """--warmup untimed rounds, then --repeats timed rounds; each round runs every preset's
    training and inference step in turn, so that a change in the machine's load falls on all."""
    steps = {name: make_steps(name, args) for name in names}
    runs = []
    for round_ in range(args.warmup + args.repeats):
        for name, (batch, phases) in steps.items():
            for phase, step in phases.items():
                start = time.perf_counter()
                step()
                rate = batch / (time.perf_counter() - start)
                if round_ >= args.warmup:
                    runs.append({"preset": name, "phase": phase, "batch": batch,
                                 "round": round_ - args.warmup + 1, "img_s": rate})
        print(f"round {round_ + 1} of {args.warmup + args.repeats} done", flush=True)
    return runs


def summarise(runs: list[dict]) -> dict:
    """Per preset: the median images/s of training and inference steps, and the batch."""
    presets: dict[str, dict] = {}
    for run in runs:
        presets.setdefault(run["preset"], {"batch": run["batch"]})
    for name, row in presets.items():
        for phase in ("train", "infer"):
            row[f"{phase}_img_s"] = statistics.median(r["img_s"] for r in runs
                                                      if r["preset"] == name and r["phase"] == phase)
    return {"presets": presets}


def resource_payload(result: dict, path: Path) -> dict:
    """What `model-info --list` reads: the machine in words and the medians, from the result file
    `path` (named in the resource, so that a test can check one against the other)."""
    machine = result["machine"]
    described = (f"{machine['cpu']}, {result['settings']['threads']} threads, torch {result['packages'].get('torch')}, "
                 f"{result['date'][:10]}")
    presets = {name: {"train_img_s": round(row["train_img_s"], 2), "infer_img_s": round(row["infer_img_s"], 2),
                      "batch": row["batch"]} for name, row in result["summary"]["presets"].items()}
    try:
        shown = path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = str(path)
    return {"machine": described, "result": shown, "presets": presets}


def main() -> None:
    from mlic_edge.model.presets import PRESETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", action="append", choices=list(PRESETS),
                        help="repeat the flag for several (default: every preset)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--big-batch", type=int, default=4, help="batch for r101-448")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=result_dir(NAME) / f"{NAME}.json", help="the result file")
    parser.add_argument("--resource", type=Path, default=RESOURCE, help="the model-info resource written from it")
    parser.add_argument("--no-resource", action="store_true", help="write the result file only")
    parser.add_argument("--resource-from", type=Path, help="write the resource from this result file; measure nothing")
    args = parser.parse_args()
    if args.resource_from:
        write_result(args.resource, resource_payload(read_result(args.resource_from), args.resource_from))
        print(f"wrote {args.resource} from {args.resource_from}")
        return

    import torch

    result = new_result(NAME, {"presets": args.presets or list(PRESETS), "batch": args.batch,
                               "big_batch": args.big_batch, "warmup": args.warmup, "repeats": args.repeats,
                               "threads": torch.get_num_threads(), "classes": 20, "weights": "random"})
    result["runs"] = measure(result["settings"]["presets"], args)
    result["summary"] = summarise(result["runs"])
    for name, row in result["summary"]["presets"].items():
        print(f"{name:10s} batch {row['batch']:2d}: train {row['train_img_s']:7.2f} img/s, "
              f"infer {row['infer_img_s']:7.2f} img/s")
    result["summary"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # the machine is shared
    write_result(args.out, result)
    print(f"wrote {args.out}")
    if not args.no_resource:
        write_result(args.resource, resource_payload(result, args.out))
        print(f"wrote {args.resource}")


if __name__ == "__main__":
    main()
