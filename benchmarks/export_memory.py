#!/usr/bin/env python3
"""Wall time and peak RSS per export stage, for ResNet101 @448 with the paper's head (or a checkpoint).

    python benchmarks/export_memory.py runs/bench_r101 --precision int8 --calib-images 100,200,500
    python benchmarks/export_memory.py runs/bench_r101 --precision fp32,fp16

Each export runs in a fresh process (peak RSS is per process). Inside it a sampler thread reads
VmRSS every 20 ms and keeps the peak per stage: calibration images, trace (torch -> ONNX), verify
(ONNX Runtime vs PyTorch), calibrate (int8: activation ranges over the images), convert (fp16 /
int8 Q/DQ placement, calibration excluded), write. Calibration images come
from the digits demo set (real images). The random-weight checkpoint is made once in the folder.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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
                    ("cleanup_graph", "cleanup"), ("compare_with_reference", "verify"),
                    ("compare_with_torch", "verify"), ("_save", "write")):
    if hasattr(onnx_export, name):  # trees before this script: compare_with_torch, no torch_reference
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="folder for r101.pt (made once) and the graphs")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of the random ResNet101")
    parser.add_argument("--precision", default="int8", help="comma list of fp32, fp16, int8, int8-cpu")
    parser.add_argument("--calib-images", default="100,200,500", help="int8: comma list of image counts")
    parser.add_argument("--calib-batch", type=int, default=0, help="int8: images per calibration step (0: default)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    ckpt = args.checkpoint or make_checkpoint(args.folder)
    rows = []
    for spec in args.precision.split(","):
        precision, target = ("int8", "cpu") if spec == "int8-cpu" else (spec, "tensorrt")
        counts = [int(n) for n in args.calib_images.split(",")] if precision == "int8" else [0]
        for images in counts:
            child = {"ckpt": str(ckpt), "out": str(args.folder / f"r101_{spec}_{images}.onnx"), "precision": precision,
                     "target": target, "images": images or 500, "calib_batch": args.calib_batch}
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child)], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{spec} {images}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"export": spec, "calib_images": images or None, **result})
            stages = ", ".join(f"{name} {s['seconds']:.0f} s / {s['peak_gib']:.1f} GiB"
                               for name, s in result["stages"].items())
            print(f"{spec:8s} images {images or '-':>4}: {result['total_seconds']:.0f} s, peak {result['peak_gib']:.1f} GiB"
                  f"  ({stages})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
