#!/usr/bin/env python3
"""Throughput of `mlic-edge serve` (Triton, dynamic batcher) against local `infer` on the same
model, images and machine: images/s end to end (list, read, decode, model, rows to a CSV).

    python benchmarks/serve_throughput.py                                  # quickstart + lite0-224, HTTP + gRPC
    python benchmarks/serve_throughput.py --arch quickstart --transport http --repeats 3
    python benchmarks/serve_throughput.py --model best.onnx --folder images/ --json out.json

Per model: a server on loopback (a subprocess, stopped at the end whatever happens), local
`Tagger`s and one `RemoteTagger` per transport, each opened once and warmed up untimed; then
--repeats rounds, each timing `run_inference` on every path in turn (local, local-no-spin, http,
grpc, local, ...), so that the load of a shared machine falls on all of them alike. The server
runs ONNX Runtime without busy-waiting threads (`serve`'s setting); local `infer` is timed as
shipped (ONNX Runtime's default: spinning) and with the server's setting ("local-no-spin"), so the
ratio to the latter is the cost of serving alone. Summary: the medians of the rounds' served /
local ratios, the CPU time per image of each path, and the server's batching counters (requests,
model executions, images per execution) over the timed runs, from its Prometheus endpoint. Without --model, a randomly initialised model of the architecture is exported
to ONNX fp32 (speed does not depend on the weights); without --folder, --images JPEGs cut from
scikit-image's photos (benchmarks/infer_throughput.py makes both).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from infer_throughput import make_images, random_model
from result_files import new_result, result_dir, write_result

COUNTERS = ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count")
SERVED = "bench"


def server_counters(port: int) -> dict[str, float]:
    """The served model's request, execution and image counters from the metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = {key: 0.0 for key in COUNTERS}
    for line in text.splitlines():
        key = line.split("{", 1)[0]
        if key in found and f'model="{SERVED}"' in line:
            found[key] = float(line.rsplit(" ", 1)[1])
    return found


def group_cpu_s(group: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group: the server, its
    tritonserver and the Python backend stubs."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:                   # pgrp; utime and stime follow at 11, 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def start_server(model: Path, port: int, batch: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mlic_edge", "serve", str(model), "--name", SERVED,
                                 "--http-port", str(port), "--grpc-port", str(port + 1),
                                 "--metrics-port", str(port + 2), "--max-batch", str(batch)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def timed(listing: Path, tagger, out: Path, batch: int, server: int) -> dict:
    """One `run_inference` over the listing (every image must be tagged): images/s, and the CPU
    seconds per image of this process (the client, or local infer) and of the server's processes."""
    from mlic_edge.runtime.infer import run_inference

    cpu, server_cpu, started = own_cpu_s(), group_cpu_s(server), time.perf_counter()
    summary = run_inference(listing, tagger, out, batch_size=batch, progress=False)
    seconds = time.perf_counter() - started
    if summary.failed:
        raise RuntimeError(f"{summary.failed} images failed")
    n = summary.processed
    return {"images_per_s": n / seconds, "cpu_ms_per_image": 1e3 * (own_cpu_s() - cpu) / n,
            "server_cpu_ms_per_image": 1e3 * (group_cpu_s(server) - server_cpu) / n}


def measure(label: str, model: Path, listing: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """The interleaved rounds of one model: one run dict per (round, path)."""
    import mlic_edge
    from mlic_edge.serve.server import wait_ready

    port = args.http_port
    server = start_server(model, port, args.batch, work / f"{label}-server.log")
    taggers = {}
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout_s=180)
        taggers["local"] = mlic_edge.load(model, device="cpu", batch_size=args.batch)
        if model.suffix == ".onnx":                                 # the server's ONNX Runtime setting
            taggers["local-no-spin"] = mlic_edge.load(model, device="cpu", batch_size=args.batch, spin=False)
        urls = {"http": f"http://127.0.0.1:{port}/{SERVED}", "grpc": f"grpc://127.0.0.1:{port + 1}/{SERVED}"}
        for transport in args.transport:
            taggers[transport] = mlic_edge.load(urls[transport], batch_size=args.batch, concurrency=args.in_flight)
        warm = work / "warm.txt"                                    # sessions, connections, caches
        warm.write_text("".join(listing.read_text().splitlines(keepends=True)[:4 * args.batch]))
        for path, tagger in taggers.items():
            timed(warm, tagger, work / "warm.csv", args.batch, server.pid)
        runs = []
        for round_ in range(args.repeats):
            for path, tagger in taggers.items():
                before = server_counters(port + 2)
                run = {"model": label, "round": round_, "path": path,
                       **timed(listing, tagger, work / f"{path}.csv", args.batch, server.pid)}
                after = server_counters(port + 2)
                run.update({key.removeprefix("nv_inference_"): after[key] - before[key] for key in COUNTERS})
                runs.append(run)
                print(f"  {label} round {round_} {path:5s} {run['images_per_s']:8.1f} images/s, CPU ms/image "
                      f"{run['cpu_ms_per_image']:.1f} here + {run['server_cpu_ms_per_image']:.1f} server", flush=True)
        return runs
    finally:
        for tagger in taggers.values():
            tagger.close()
        stop_server(server)


def summarise(runs: list[dict], transports: list[str]) -> dict:
    """Per model and transport: medians, the median of the rounds' served/local ratios, and the
    batching counters summed over the timed runs."""
    summary: dict = {}
    for label in dict.fromkeys(run["model"] for run in runs):
        mine = [run for run in runs if run["model"] == label]
        local = {run["round"]: run["images_per_s"] for run in mine if run["path"] == "local"}
        same = {run["round"]: run["images_per_s"] for run in mine if run["path"] == "local-no-spin"}
        entry = {"local_images_per_s": statistics.median(local.values()),
                 "local_no_spin_images_per_s": statistics.median(same.values()) if same else None}
        for path, key in (("local", "local_cpu_ms_per_image"), ("local-no-spin", "local_no_spin_cpu_ms_per_image")):
            cpu = [run["cpu_ms_per_image"] for run in mine if run["path"] == path]
            entry[key] = statistics.median(cpu) if cpu else None
        for transport in transports:
            served = [run for run in mine if run["path"] == transport]
            requests = sum(run["request_success"] for run in served)
            executions = sum(run["exec_count"] for run in served)
            images = sum(run["count"] for run in served)
            entry[transport] = {
                "served_images_per_s": statistics.median(run["images_per_s"] for run in served),
                "ratio": statistics.median(run["images_per_s"] / local[run["round"]] for run in served),
                "ratio_no_spin": statistics.median(run["images_per_s"] / same[run["round"]] for run in served)
                if same else None,
                "client_cpu_ms_per_image": statistics.median(run["cpu_ms_per_image"] for run in served),
                "server_cpu_ms_per_image": statistics.median(run["server_cpu_ms_per_image"] for run in served),
                "requests": requests, "executions": executions, "images": images,
                "images_per_request": images / requests if requests else None,
                "images_per_execution": images / executions if executions else None}
        summary[label] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an .onnx/.pt file (default: random weights of each --arch)")
    parser.add_argument("--arch", nargs="+", default=["quickstart", "lite0-224"],
                        help="without --model: quickstart and/or presets")
    parser.add_argument("--folder", type=Path, help="tag these images instead of generated JPEGs")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--batch", type=int, default=8, help="local batch and the server's --max-batch")
    parser.add_argument("--transport", nargs="+", choices=("http", "grpc"), default=["http", "grpc"])
    parser.add_argument("--in-flight", type=int, default=None, help="requests in flight (RemoteTagger default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--http-port", type=int, default=18200, help="grpc = +1, metrics = +2")
    parser.add_argument("--json", type=Path, help="result file (default: benchmarks/results/<date>-serve-throughput/)")
    args = parser.parse_args()

    from mlic_edge.core.images import list_inputs
    from mlic_edge.runtime.remote import DEFAULT_IN_FLIGHT

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mlic-serve-bench-") as tmp:
        work = Path(tmp)
        paths = list_inputs(args.folder)[:args.images] if args.folder else \
            make_images(work / "images", args.images, (width, height))
        listing = work / "inputs.txt"
        listing.write_text("".join(f"{Path(p).resolve()}\n" for p in paths))
        models = {args.model.stem: args.model} if args.model else \
            {arch: random_model(work / arch, arch) for arch in args.arch}
        settings = {"models": list(models), "random_weights": args.model is None,
                    "images": len(paths), "image_size": None if args.folder else [width, height],
                    "folder": str(args.folder) if args.folder else None, "batch": args.batch,
                    "server_max_batch": args.batch, "transports": args.transport,
                    "in_flight": args.in_flight or DEFAULT_IN_FLIGHT, "repeats": args.repeats,
                    "local_workers": 2, "server_ort_spinning": False,
                    "order": "interleaved: local, local-no-spin, " + ", ".join(args.transport) + " per round"}
        result = new_result("serve_throughput", settings)
        for label, model in models.items():
            result["runs"] += measure(label, model, listing, work, args)
    result["summary"] = summarise(result["runs"], args.transport)
    for label, entry in result["summary"].items():
        for transport in args.transport:
            t = entry[transport]
            print(f"{label} {transport}: local {entry['local_images_per_s']:.1f} (no spin "
                  f"{entry['local_no_spin_images_per_s'] or 0:.1f}), served {t['served_images_per_s']:.1f} "
                  f"images/s, median ratio {t['ratio']:.2f} (to no spin {t['ratio_no_spin'] or 0:.2f}), "
                  f"{t['images_per_execution']:.1f} images per execution; CPU ms/image local "
                  f"{entry['local_cpu_ms_per_image']:.1f}, served {t['client_cpu_ms_per_image']:.1f} client + "
                  f"{t['server_cpu_ms_per_image']:.1f} server")
    out = args.json or result_dir("serve-throughput") / "serve_throughput.json"
    print(f"wrote {write_result(out, result)}")


if __name__ == "__main__":
    main()
