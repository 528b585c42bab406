#!/usr/bin/env python3
"""Training and inference images/s of every model preset on this machine, for `model-info --list`.

    python benchmarks/preset_speed.py                      # writes mlic_edge/resources/preset_speed.json
    python benchmarks/preset_speed.py --presets lite0-224 --out /tmp/speed.json

Training: the trainer's step (APL loss, AdamW, channels_last) at batch --batch (ResNet101 @448:
--big-batch, it needs GBs per image on a CPU), random images, 20 classes. Inference: eval mode,
no_grad, same batch. Median images/s over --repeats timed steps after --warmup. Random weights:
speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mlic_edge.losses import build_loss
from mlic_edge.model import build_model
from mlic_edge.model.presets import PRESETS

OUT = Path(__file__).resolve().parents[1] / "mlic_edge" / "resources" / "preset_speed.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(step, images: int, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--big-batch", type=int, default=4, help="batch for r101-448")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.manual_seed(0)
    results = {}
    for name in args.presets.split(","):
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

        results[name] = {"train_img_s": round(timed(train_step, batch, args.warmup, args.repeats), 2),
                         "infer_img_s": round(timed(infer_step, batch, args.warmup, args.repeats), 2),
                         "batch": batch}
        print(f"{name:10s} batch {batch:2d}: train {results[name]['train_img_s']:7.2f} img/s, "
              f"infer {results[name]['infer_img_s']:7.2f} img/s", flush=True)
        del model, optimizer
    machine = (f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
               f"{time.strftime('%Y-%m-%d')}")
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    payload = {"machine": machine, "presets": {**previous.get("presets", {}), **results}}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
