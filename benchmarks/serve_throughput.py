"""Throughput of `mlic-edge serve` (Triton, dynamic batcher) vs local `infer` on the same model,
images and machine, batch 8: images/s end to end (read + decode + model + rows).

    python benchmarks/serve_throughput.py MODEL.onnx IMAGES/ [--repeat 4] [--http-port 18200]

Starts the server as a subprocess on loopback (killed at the end whatever happens), warms both
paths up once, then times `run_inference` locally and through `--server` (HTTP, 16 requests in
flight), and prints the server's batching counters from its metrics endpoint.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("--repeat", type=int, default=4, help="passes over the images per timing")
    parser.add_argument("--http-port", type=int, default=18200, help="grpc = +1, metrics = +2")
    args = parser.parse_args()

    from mlic_edge.runtime.infer import run_inference
    from mlic_edge.runtime.remote import RemoteTagger
    from mlic_edge.serve.server import wait_ready

    files = sorted(p for p in Path(args.images).iterdir() if p.is_file()) * args.repeat
    work = Path(tempfile.mkdtemp(prefix="mlic-serve-bench-"))
    listing = work / "inputs.txt"
    listing.write_text("\n".join(str(p.resolve()) for p in files) + "\n")
    port = args.http_port
    server = subprocess.Popen([sys.executable, "-m", "mlic_edge", "serve", args.model, "--name", "bench",
                               "--http-port", str(port), "--grpc-port", str(port + 1), "--metrics-port", str(port + 2),
                               "--max-batch", "8"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout_s=120, model="bench_metadata")
        results = {}
        for label in ("local", "server"):
            for attempt in ("warm-up", "timed"):
                out = work / f"{label}-{attempt}.csv"
                target = (RemoteTagger(f"http://127.0.0.1:{port}/bench", batch_size=8) if label == "server"
                          else args.model)
                started = time.perf_counter()
                summary = run_inference(listing, target, out, batch_size=8, progress=False)
                seconds = time.perf_counter() - started
                if label == "server":
                    target.close()
                results[label] = summary.processed / seconds
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/metrics", timeout=10) as reply:
            counters = [line for line in reply.read().decode().splitlines()
                        if line.startswith(("nv_inference_request_success{", "nv_inference_exec_count{"))
                        and 'model="bench"' in line]
        print(f"{len(files)} images, batch 8, {os.cpu_count()} CPUs")
        print(f"local infer:   {results['local']:.1f} images/s")
        print(f"served (HTTP): {results['server']:.1f} images/s")
        print("\n".join(counters))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
