#!/usr/bin/env python3
"""Wall time and peak RSS per export stage, for ResNet101 @448 with the paper's head (or a checkpoint).

    python benchmarks/export_memory.py runs/bench_r101 --precision int8 --calib-images 100 --calib-images 500
    python benchmarks/export_memory.py runs/bench_r101 --precision fp32 --precision fp16

Each export runs in a fresh process (peak RSS is per process). Inside it a sampler thread reads
VmRSS every 20 ms and keeps the peak per stage: calibration images, trace (torch -> ONNX), verify
(ONNX Runtime vs PyTorch), calibrate (int8: activation ranges over the images), convert (fp16 /
int8 Q/DQ placement, calibration excluded), write. Calibration images come
from the digits demo set (real images). The random-weight checkpoint is made once in the folder.
The result file --out holds one run per export, with its stages.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from result_files import new_result, result_dir, write_result

NAME = "export_memory"

CHILD = r"""
import json, sys, threading, time
from pathlib import Path

def rss_gib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2 ** 20
    return 0.0

stages, current = [], {"name": "start", "t": time.perf_counter(), "peak": rss_gib()}
def sample():
    while True:
        current["peak"] = max(current["peak"], rss_gib())
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()

# Time and peak RSS of calls to fn under `name`; a stage inside another (calibrate inside convert)
# pauses the outer one, which resumes under its own name afterwards.
def stage(name, fn):
    def wrapped(*args, **kwargs):
        global current
        outer = current
        outer["seconds"] = outer.get("seconds", 0.0) + time.perf_counter() - outer["t"]
        stages.append(dict(outer))
        current = {"name": name, "t": time.perf_counter(), "peak": rss_gib()}
        try:
            return fn(*args, **kwargs)
        finally:
            current["seconds"] = time.perf_counter() - current["t"]
            stages.append(current)
            resumed = "other" if outer["name"] == "start" else outer["name"]
            current = {"name": resumed, "t": time.perf_counter(), "peak": rss_gib()}
    return wrapped

import mlic_edge.checkpoint as checkpoint
import mlic_edge.export.calibration as cal
from mlic_edge.export import onnx_export, precision
checkpoint.load_model = stage("load", checkpoint.load_model)
cal.collect_calibration = stage("calibration images", cal.collect_calibration)
for name, label in (("torch_reference", "reference outputs"), ("torch_to_onnx", "trace"),
                    ("cleanup_graph", "cleanup"), ("compare_with_reference", "verify"), ("_save", "write")):
    setattr(onnx_export, name, stage(label, getattr(onnx_export, name)))
import mlic_edge.export.activation_ranges as ranges
precision.convert = stage("convert", precision.convert)
ranges.collect_stats = stage("calibrate", ranges.collect_stats)

args = json.loads(sys.argv[1])
started = time.perf_counter()
onnx_export.export_onnx(args["ckpt"], args["out"], precision=args["precision"], target=args["target"],
                        calib=({"data": "digits", "root": None, "split": "train"} if args["precision"] == "int8" else None),
                        calib_images=args["images"], calib_batch=args["calib_batch"])
stages.append(current)
total = time.perf_counter() - started
peaks = {}
for s in stages:
    if s["name"] in ("start", "other"):
        continue
    entry = peaks.setdefault(s["name"], {"seconds": 0.0, "peak_gib": 0.0})
    entry["seconds"] += s.get("seconds", 0.0)
    entry["peak_gib"] = max(entry["peak_gib"], s["peak"])
print(json.dumps({"total_seconds": total, "peak_gib": max(s["peak"] for s in stages), "stages": peaks}))
"""


def make_checkpoint(folder: Path) -> Path:
    ckpt = folder / "r101.pt"
    if ckpt.is_file():
        return ckpt
    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.config import ModelConfig
    from mlic_edge.model import build_model

    folder.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig(num_classes=20, backbone="resnet101", pretrained="none", image_size=448)
    model = build_model(cfg)
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "classes": [f"c{i}" for i in range(20)], "preprocess": model.data_config(),
                           "thresholds": [0.5] * 20})
    return ckpt


def export_once(ckpt: Path, folder: Path, spec: str, images: int, calib_batch: int) -> dict | None:
    """One export in a fresh process: its total time, peak RSS and per-stage time and peak."""
    precision, target = ("int8", "cpu") if spec == "int8-cpu" else (spec, "tensorrt")
    child = {"ckpt": str(ckpt), "out": str(folder / f"r101_{spec}_{images}.onnx"), "precision": precision,
             "target": target, "images": images or 500, "calib_batch": calib_batch}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{spec} {images}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return {"export": spec, "calib_images": images or None, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder for r101.pt (made once) and the graphs")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of the random ResNet101")
    parser.add_argument("--precision", action="append", choices=("fp32", "fp16", "int8", "int8-cpu"),
                        help="repeat the flag for several (default: int8)")
    parser.add_argument("--calib-images", type=int, action="append",
                        help="int8: calibration images; repeat the flag for several (default: 100, 200 and 500)")
    parser.add_argument("--calib-batch", type=int, default=0, help="int8: images per calibration step (0: default)")
    parser.add_argument("--out", type=Path, default=result_dir(NAME) / f"{NAME}.json", help="the result file")
    args = parser.parse_args()
    precisions = args.precision or ["int8"]
    calib_counts = args.calib_images or [100, 200, 500]

    result = new_result(NAME, {"model": str(args.checkpoint) if args.checkpoint else
                               "resnet101 @448, the paper's head, 20 classes, random weights",
                               "precisions": precisions, "calib_images": calib_counts, "calib_data": "digits train",
                               "calib_batch": args.calib_batch, "rss_sample_interval_s": 0.02})
    ckpt = args.checkpoint or make_checkpoint(args.folder)
    for spec in precisions:
        for images in (calib_counts if spec.startswith("int8") else [0]):
            run = export_once(ckpt, args.folder, spec, images, args.calib_batch)
            if run is None:
                continue
            result["runs"].append(run)
            stages = ", ".join(f"{name} {s['seconds']:.0f} s / {s['peak_gib']:.1f} GiB"
                               for name, s in run["stages"].items())
            print(f"{spec:8s} images {images or '-':>4}: {run['total_seconds']:.0f} s, peak {run['peak_gib']:.1f} GiB"
                  f"  ({stages})", flush=True)
    result["summary"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # the machine is shared
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return 0 if len(result["runs"]) == sum(len(calib_counts) if p.startswith("int8") else 1 for p in precisions) else 1


if __name__ == "__main__":
    sys.exit(main())
