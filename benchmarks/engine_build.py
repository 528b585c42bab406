#!/usr/bin/env python3
"""Engine build time and size per precision, on this machine (a CPU is enough for TensorRT for RTX).

    python benchmarks/engine_build.py runs/quickstart/model_fp32.onnx runs/quickstart/model_fp16.onnx ...
    python benchmarks/engine_build.py --quickstart /tmp/qs --repeats 3   # the quickstart's architecture
    python benchmarks/engine_build.py --r101 runs/bench_r101     # the paper's ResNet101 @448 head

--quickstart and --r101 make a random-weight model (build time and size do not depend on the
weights) of the quickstart's architecture or of ResNet101 @448 with the paper's head (d_model
2048), export fp32 / fp16 / int8 (TensorRT Q/DQ, calibrated on --calib-images digits images) and
build each. Every build is forced (no engine reuse), in --repeats
rounds over the graphs; the table gives the median build time, the ONNX and engine sizes, and the
peak RSS of this process. The result file --out holds every build.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from result_files import new_result, result_dir, write_result

NAME = "engine_build"


def quickstart_graphs(out: Path, calib_images: int) -> list[Path]:
    """fp32 / fp16 / int8 (Q/DQ, calibrated on --calib-images digits images) graphs of a
    random-weight model of the quickstart's architecture."""
    from infer_throughput import random_model  # the same random-weight quickstart model

    from mlic_edge.export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    fp32 = random_model(out, "quickstart")
    ckpt = out / "random_quickstart.pt"
    graphs = [fp32]
    for precision in ("fp16", "int8"):
        path = out / f"random_quickstart_{precision}.onnx"
        calib = {"data": "digits", "root": None, "split": "train"} if precision == "int8" else None
        export_onnx(ckpt, path, precision=precision, calib=calib, calib_images=calib_images)
        graphs.append(path)
    return graphs


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


def build_all(graphs: list[Path], args) -> tuple[list[dict], list[dict]]:
    """--repeats forced builds of each graph, in rounds over the graphs (drift spreads over all)."""
    from mlic_edge.export import build_engine

    runs, facts = [], {}
    for repeat in range(1, args.repeats + 1):
        for graph in graphs:
            result = build_engine(graph, graph.with_suffix(".engine"), runtime=args.runtime, batch=args.batch,
                                  force=True)
            build = result.info.build
            runs.append({"graph": graph.name, "precision": result.precision, "repeat": repeat,
                         "build_seconds": build["build_seconds"], "engine_mib": result.engine.stat().st_size / 2 ** 20,
                         "timing_cache_reused": build.get("timing_cache_reused")})
            facts[graph.name] = {"graph": graph.name, "precision": result.precision, "onnx_mib": size_mib(graph),
                                 "runtime": result.info.runtime_label}
            print(f"built {result.engine.name}: {runs[-1]['engine_mib']:.1f} MiB in {build['build_seconds']:.1f} s",
                  flush=True)
    rows = []
    for name, row in facts.items():
        mine = [run for run in runs if run["graph"] == name]
        rows.append({**row, "engine_mib": mine[-1]["engine_mib"],
                     "median_build_seconds": statistics.median(run["build_seconds"] for run in mine)})
    return runs, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="*", type=Path, help="ONNX files exported by mlic-edge (target tensorrt)")
    parser.add_argument("--quickstart", type=Path, help="folder for the quickstart-architecture model and its graphs")
    parser.add_argument("--r101", type=Path, help="folder for the ResNet101 @448 checkpoint and its graphs")
    parser.add_argument("--calib-images", type=int, default=64, help="--quickstart / --r101 int8: calibration images")
    parser.add_argument("--runtime", default="auto", help="auto | tensorrt | tensorrt-rtx")
    parser.add_argument("--batch", default="1:8:32", help="optimization profile MIN:OPT:MAX")
    parser.add_argument("--repeats", type=int, default=1, help="builds per graph (median reported)")
    parser.add_argument("--out", type=Path, default=result_dir(NAME) / f"{NAME}.json", help="the result file")
    args = parser.parse_args()

    result = new_result(NAME, {"graphs": [str(g) for g in args.graphs],
                               "quickstart": bool(args.quickstart), "r101": bool(args.r101),
                               "weights": "random" if args.quickstart or args.r101 else "given",
                               "calib_images": args.calib_images, "runtime": args.runtime, "batch": args.batch,
                               "repeats": args.repeats})
    graphs = list(args.graphs)
    graphs += quickstart_graphs(args.quickstart, args.calib_images) if args.quickstart else []
    graphs += r101_graphs(args.r101, args.calib_images) if args.r101 else []
    if not graphs:
        parser.error("give ONNX graphs, --quickstart FOLDER or --r101 FOLDER")
    result["runs"], rows = build_all(graphs, args)
    result["summary"] = {"engines": rows,
                         "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    print(f"\nengines ({rows[0]['runtime']}, batch {args.batch}, median of {args.repeats} build(s))")
    print("| graph | precision | ONNX MiB | engine MiB | build s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['graph']} | {row['precision']} | {row['onnx_mib']:.1f} | {row['engine_mib']:.1f} | "
              f"{row['median_build_seconds']:.1f} |")
    print(f"peak RSS of this process: {result['summary']['peak_rss_gib']:.1f} GiB")
    result["summary"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # the machine is shared
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
