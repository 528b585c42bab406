#!/usr/bin/env python3
"""Engine build time and size per precision, on this machine (a CPU is enough for TensorRT for RTX).

    python benchmarks/engine_build.py runs/quickstart/model_fp32.onnx runs/quickstart/model_fp16.onnx ...
    python benchmarks/engine_build.py --r101 runs/bench_r101     # the paper's ResNet101 @448 head

--r101 makes a random-weight ResNet101 @448 checkpoint with the paper's head (d_model 2048; build
time and size do not depend on the weights), exports fp32 / fp16 / int8 (TensorRT Q/DQ, calibrated
on --calib-images digits images) and builds each. Every build is forced (no engine reuse); the
table gives the median of --repeats builds, the ONNX and engine sizes, and the peak RSS of this
process so far.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path


def r101_graphs(out: Path, calib_images: int) -> list[Path]:
    from export_memory import make_checkpoint  # the same random-weight ResNet101 @448 checkpoint

    from mlic_edge.export import export_onnx

    ckpt = make_checkpoint(out)
    graphs = []
    for precision in ("fp32", "fp16", "int8"):
        path = out / f"r101_{precision}.onnx"
        if not path.is_file():
            started = time.perf_counter()
            calib = {"data": "digits", "root": None, "split": "train"} if precision == "int8" else None
            export_onnx(ckpt, path, precision=precision, calib=calib, calib_images=calib_images)
            print(f"exported {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
        graphs.append(path)
    return graphs


def size_mib(path: Path) -> float:
    data = path.with_name(path.name + ".data")
    return (path.stat().st_size + (data.stat().st_size if data.is_file() else 0)) / 2 ** 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="*", type=Path, help="ONNX files exported by mlic-edge (target tensorrt)")
    parser.add_argument("--r101", type=Path, help="folder for the ResNet101 @448 checkpoint and its graphs")
    parser.add_argument("--calib-images", type=int, default=64, help="--r101 int8: calibration images")
    parser.add_argument("--runtime", default="auto", help="auto | tensorrt | tensorrt-rtx")
    parser.add_argument("--batch", default="1:8:32", help="optimization profile MIN:OPT:MAX")
    parser.add_argument("--repeats", type=int, default=1, help="builds per graph (median reported)")
    args = parser.parse_args()

    from mlic_edge.export import build_engine

    graphs = list(args.graphs) + (r101_graphs(args.r101, args.calib_images) if args.r101 else [])
    if not graphs:
        parser.error("give ONNX graphs or --r101 FOLDER")
    rows = []
    for graph in graphs:
        times, result = [], None
        for _ in range(args.repeats):
            result = build_engine(graph, graph.with_suffix(".engine"), runtime=args.runtime, batch=args.batch,
                                  force=True)
            times.append(result.info.build["build_seconds"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        rows.append((graph.name, result.precision, size_mib(graph), result.engine.stat().st_size / 2 ** 20,
                     statistics.median(times), peak, result.info.runtime_label))
        print(f"built {result.engine.name}: {rows[-1][3]:.1f} MiB in {rows[-1][4]:.1f} s", flush=True)
    print(f"\nengines ({rows[0][6]}, batch {args.batch}, median of {args.repeats} build(s))")
    print("| graph | precision | ONNX MiB | engine MiB | build s | peak RSS GiB (process) |")
    print("|---|---|---|---|---|---|")
    for name, precision, onnx_mib, engine_mib, seconds, peak, _ in rows:
        print(f"| {name} | {precision} | {onnx_mib:.1f} | {engine_mib:.1f} | {seconds:.1f} | {peak:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
