#!/usr/bin/env python3
"""Memory of `mlic-edge infer` on folders of 10,000 and 100,000 images: it should not grow with
the folder.

    python benchmarks/infer_memory.py                      # 10,000 and 100,000 images
    python benchmarks/infer_memory.py --count 1000 --count 20000 --keep /tmp/folders

Each folder holds real files (tiny PNGs, 8 distinct pictures hard-linked over and over: the
images are decoded one by one all the same). Each count runs `mlic-edge infer FOLDER --out
preds.csv` in a fresh process with a randomly initialised tiny model (timm's test_resnet @64,
exported to ONNX here: memory of the job, not of the model), sampling the process's resident
memory (VmRSS) every 0.2 s. Printed per count: RSS at 10%, 50% and 90% of the rows, the peak,
the wall time, and the peak's growth from the first folder; the result file --out holds these and
every (rows written, RSS) sample.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from result_files import new_result, result_dir, write_result

NAME = "infer_memory"


def tiny_model(folder: Path) -> Path:
    import torch

    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.config import ModelConfig
    from mlic_edge.export import export_onnx
    from mlic_edge.model import build_model

    cfg = ModelConfig(num_classes=6, backbone="test_resnet", pretrained="none", image_size=64, d_model=32,
                      nhead=4, dim_feedforward=64)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = folder / "tiny.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "classes": [f"c{k}" for k in range(6)], "preprocess": model.data_config(),
                           "thresholds": [0.5] * 6})
    return export_onnx(ckpt, folder / "tiny.onnx").path


def make_folder(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for k in range(8):
        path = folder.parent / f"source_{folder.name}_{k}.png"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        sources.append(path)
    for i in range(count):
        os.link(sources[i % 8], folder / f"img_{i:06d}.png")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_job(folder: Path, model: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "mlic_edge", "infer", str(folder), "--model", str(model), "--out", str(out),
               "--no-progress", "--device", "cpu"]
    partial = out.with_name(out.name + ".partial")
    started = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[int, float]] = []                      # (rows written, RSS MiB)
    while job.poll() is None:
        rss = rss_mib(job.pid)
        rows = partial.read_bytes().count(b"\n") - 1 if partial.exists() else 0
        if rss is not None:
            samples.append((max(rows, 0), rss))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if job.returncode != 0:
        raise SystemExit(f"infer failed: {job.stderr.read()[-2000:]}")
    return {"seconds": seconds, "samples": samples}


def measure_count(base: Path, model: Path, count: int) -> dict:
    """One infer job over a folder of `count` images: wall time, peak RSS and RSS at 10/50/90% of the rows."""
    folder = base / f"images_{count}"
    if not folder.exists():
        make_folder(folder, count)
    job = run_job(folder, model, base / f"preds_{count}.csv")
    lines = (base / f"preds_{count}.csv").read_bytes().count(b"\n") - 1
    if lines != count:
        raise SystemExit(f"infer wrote {lines} rows for {count} images")
    samples = job["samples"]
    at = {}
    for share in (10, 50, 90):
        later = [rss for rows, rss in samples if rows >= share / 100 * count]
        at[f"rss_at_{share}pct_mib"] = later[0] if later else None
    return {"images": count, "seconds": job["seconds"], "img_s": count / job["seconds"],
            "peak_mib": max(rss for _, rss in samples), **at, "samples_rows_mib": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, action="append",
                        help="images in a folder; repeat the flag for several (default: 10000 and 100000)")
    parser.add_argument("--keep", type=Path, help="build the folders here and keep them (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=result_dir(NAME) / f"{NAME}.json", help="the result file")
    args = parser.parse_args()
    counts = args.count or [10000, 100000]

    result = new_result(NAME, {"counts": counts, "model": "timm test_resnet @64, d_model 32, random weights, ONNX fp32",
                               "images": "48x64 PNGs, 8 distinct pictures hard-linked", "device": "cpu",
                               "rss_sample_interval_s": 0.2})
    with tempfile.TemporaryDirectory(prefix="mlic-infer-memory-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        model = tiny_model(base)
        for count in counts:
            run = measure_count(base, model, count)
            result["runs"].append(run)
            at = [run[f"rss_at_{share}pct_mib"] for share in (10, 50, 90)]
            print(f"{count:>7} images: {run['seconds']:6.1f} s, {run['img_s']:6.0f} img/s, RSS at "
                  f"10/50/90%: {', '.join(f'{v:.0f}' if v else '-' for v in at)} MiB, "
                  f"peak {run['peak_mib']:.0f} MiB", flush=True)
    first = result["runs"][0]
    result["summary"] = {"peak_growth_mib": {str(run["images"]): run["peak_mib"] - first["peak_mib"]
                                             for run in result["runs"][1:]}}
    for run in result["runs"][1:]:
        print(f"peak at {run['images']} vs {first['images']} images: {run['peak_mib'] - first['peak_mib']:+.0f} MiB")
    result["summary"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # the machine is shared
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
