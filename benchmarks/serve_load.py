"""Load over time on `mlic-edge serve`: N clients for M seconds on loopback, each sending one image
per request and waiting for the answer before the next (closed loop), with every answer checked
against the labels a local model gives. Records each request's latency, the errors, the throughput
and the server's memory (resident set of the server process and its children: tritonserver and
the Python backend stubs) sampled over time.

    python benchmarks/serve_load.py [--model M.onnx] [--images DIR] --clients 4 16 --seconds 60 \\
        [--json FILE] [--plot FILE.png]
    python benchmarks/serve_load.py --replot RESULT.json --plot docs/images/serve_load.png

Without --model, the quickstart architecture (tf_efficientnet_lite0, 112 px, 10 classes) with
random weights (seed 0) is exported to ONNX; without --images, 32 synthetic 320x240 JPEGs
(seeded) are the requests. Runs with several client counts share one server, one after the other.
The pytest load test (tests/test_serve.py) runs `run_load` for a few seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from serve_throughput import stop_server

MODEL_NAME = "load"
WARM_UP_FRACTION = 0.2     # memory is compared from the end of this share of a run


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc), in bytes."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue            # exited meanwhile
    return total


def expected_labels(model: str | os.PathLike, files: list[Path]) -> dict[str, str]:
    """file name -> the ';'-joined labels of a local model (what every served answer must equal)."""
    from mlic_edge.runtime.tagger import Tagger

    with Tagger(model, device="cpu") as tagger:
        return {Path(p.source).name: ";".join(p.labels) for p in tagger.predict(files)}


def _client(address: str, model: str, files: list[Path], expected: dict[str, str], stop: threading.Event, origin: float,
            start: int, record: dict) -> None:
    """One closed-loop client: a request, its answer, the next request."""
    import tritonclient.http as http

    client = http.InferenceServerClient(address, connection_timeout=120, network_timeout=120)
    payloads = [(f.name, f.read_bytes()) for f in files]
    outputs = [http.InferRequestedOutput(n, binary_data=True) for n in ("labels", "error")]
    n = start
    try:
        while not stop.is_set():
            name, data = payloads[n % len(payloads)]
            n += 1
            image = http.InferInput("image", [1, 1], "BYTES")
            image.set_data_from_numpy(np.array([[data]], dtype=object), binary_data=True)
            sent = time.perf_counter()
            try:
                result = client.infer(model, [image], outputs=outputs)
            except Exception as e:  # noqa: BLE001 -- counted, the run goes on
                record["errors"].append(f"{sent - origin:.3f} s {name}: {' '.join(str(e).split())[:200]}")
                continue
            latency = time.perf_counter() - sent
            error = bytes(result.as_numpy("error").reshape(-1)[0]).decode()
            labels = bytes(result.as_numpy("labels").reshape(-1)[0]).decode()
            if error:
                record["errors"].append(f"{sent - origin:.3f} s {name}: {error}")
            elif labels != expected[name]:
                record["mismatches"].append(f"{name}: served {labels!r}, local {expected[name]!r}")
            record["requests"].append([round(sent - origin, 4), round(latency * 1000, 3)])
    finally:
        client.close()


def run_load(address: str, model: str, files: list[Path], expected: dict[str, str], *, clients: int,
             seconds: float, server_pid: int, sample_s: float = 1.0) -> dict:
    """`clients` threads for `seconds` against the served `model` at `address` (host:port, HTTP).
    Returns the raw run: requests [[start s, latency ms]], errors, label mismatches and the server
    tree's RSS samples [[t s, bytes]]."""
    record: dict = {"clients": clients, "seconds": seconds, "requests": [], "errors": [], "mismatches": [],
                    "rss": []}
    stop = threading.Event()
    origin = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(address, model, files, expected, stop, origin, k, record),
                                daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    while (now := time.perf_counter() - origin) < seconds:
        record["rss"].append([round(now, 3), tree_rss_bytes(server_pid)])
        time.sleep(min(sample_s, max(seconds - now, 0.0)))
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    record["rss"].append([round(time.perf_counter() - origin, 3), tree_rss_bytes(server_pid)])
    record["requests"].sort()
    return record


def summarise(run: dict) -> dict:
    """Percentiles (ms), throughput, error count and memory (MB): at the start, after warm-up
    (the first sample past WARM_UP_FRACTION of the run), at the end and the peak."""
    latencies = [latency for _, latency in run["requests"]]
    p50, p90, p99 = (float(np.percentile(latencies, q)) for q in (50, 90, 99)) if latencies else (None,) * 3
    rss = run["rss"]
    warm = next((b for t, b in rss if t >= WARM_UP_FRACTION * run["seconds"]), rss[-1][1])
    return {"clients": run["clients"], "seconds": run["seconds"], "requests": len(latencies),
            "throughput_rps": len(latencies) / run["seconds"], "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "mean_ms": statistics.fmean(latencies) if latencies else None,
            "errors": len(run["errors"]), "mismatches": len(run["mismatches"]),
            "rss_start_mb": rss[0][1] / 2**20, "rss_warm_mb": warm / 2**20, "rss_end_mb": rss[-1][1] / 2**20,
            "rss_peak_mb": max(b for _, b in rss) / 2**20}


@contextlib.contextmanager
def served(model: str | os.PathLike, port: int, *extra: str):
    """`mlic-edge serve MODEL --name load` on loopback (HTTP port, gRPC +1, metrics +2), stopped
    (SIGTERM, then SIGKILL of its process group) whatever happens. Yields the process."""
    from mlic_edge.serve.server import wait_ready

    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "mlic_edge", "serve", str(model), "--name", MODEL_NAME,
                                "--http-port", str(port), "--grpc-port", str(port + 1),
                                "--metrics-port", str(port + 2), *extra],
                               stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited: {log.read().decode(errors='replace')[-500:]}")
            try:
                wait_ready(f"http://127.0.0.1:{port}", timeout_s=2, model=f"{MODEL_NAME}_metadata")
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        yield process
    finally:
        stop_server(process)
        log.close()


def quickstart_onnx(folder: Path) -> Path:
    """The quickstart architecture with random weights (seed 0), exported to ONNX (fp32)."""
    import torch

    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.config import Recipe
    from mlic_edge.export import export_onnx
    from mlic_edge.model import build_model

    cfg = Recipe.load("quickstart").model.replace(pretrained="none", num_classes=10)
    torch.manual_seed(0)
    checkpoint = folder / "quickstart-random.pt"
    save_checkpoint(checkpoint, {
        "model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "classes": [str(d) for d in range(10)],
        "preprocess": {"image_size": cfg.image_size, "resize": "squash", "mean": [0.485, 0.456, 0.406],
                       "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"},
        "thresholds": [0.5] * 10})
    out = folder / "quickstart-random.onnx"
    export_onnx(checkpoint, out)
    return out


def synthetic_jpegs(folder: Path, count: int = 32, size: tuple[int, int] = (320, 240)) -> list[Path]:
    """Seeded JPEGs: smooth colour gradients with noise (what a camera frame compresses like)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
    files = []
    for k in range(count):
        colour = rng.uniform(40, 215, 3)
        pixels = np.clip(colour * (0.5 + ramp) + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        files.append(folder / f"{k:03d}.jpg")
        Image.fromarray(pixels).save(files[-1], quality=90)
    return files


def plot(result: dict, path: Path) -> None:
    """Server memory and request latency over time, one colour per client count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, latency) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for run in result["runs"]:
        label = f"{run['clients']} clients"
        memory.plot([t for t, _ in run["rss"]], [b / 2**20 for _, b in run["rss"]], label=label)
        times = np.array([t for t, _ in run["requests"]])
        values = np.array([ms for _, ms in run["requests"]])
        seconds = np.floor(times).astype(int)
        for q, style in ((50, "-"), (99, ":")):
            per_second = [np.percentile(values[seconds == s], q) for s in np.unique(seconds)]
            latency.plot(np.unique(seconds) + 0.5, per_second, style, label=f"{label}, p{q}",
                         color=memory.lines[-1].get_color())
    memory.set_ylabel("server RSS (MB)")
    memory.legend()
    latency.set_ylabel("latency per second (ms)")
    latency.set_xlabel("time in the run (s)")
    latency.legend(fontsize="small")
    fig.suptitle(f"mlic-edge serve under load: {result['settings']['model_short']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file served (default: the quickstart architecture, random weights)")
    parser.add_argument("--images", help="folder of images sent (default: 32 synthetic 320x240 JPEGs)")
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--http-port", type=int, default=18740, help="grpc = +1, metrics = +2")
    parser.add_argument("--json", help="result file (default: benchmarks/results/<date>-serve-load/serve_load.json)")
    parser.add_argument("--plot", help="PNG of memory and latency over time (default: beside the result file)")
    parser.add_argument("--replot", metavar="RESULT", help="only draw --plot from the raw samples of a result file")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from result_files import new_result, read_result, result_dir, write_result

    if args.replot:
        plot(read_result(args.replot), Path(args.plot or Path(args.replot).with_suffix(".png")))
        return

    work = Path(tempfile.mkdtemp(prefix="mlic-serve-load-"))
    model = Path(args.model) if args.model else quickstart_onnx(work)
    files = sorted(p for p in Path(args.images).iterdir() if p.is_file()) if args.images else synthetic_jpegs(work)
    expected = expected_labels(model, files)
    out = Path(args.json) if args.json else result_dir("serve-load") / "serve_load.json"
    short = Path(args.model).name if args.model else "quickstart architecture, random weights, ONNX fp32"
    label = args.model or "quickstart architecture (tf_efficientnet_lite0, 112 px, 10 classes), random weights, ONNX fp32"
    result = new_result("serve_load", {"model_label": label, "model_short": short, "images": args.images or "32 synthetic 320x240 JPEGs",
                                       "clients": args.clients, "seconds": args.seconds, "max_batch": 8,
                                       "protocol": "HTTP, binary tensors, one image per request, closed loop",
                                       "warm_up_fraction": WARM_UP_FRACTION})
    with served(model, args.http_port, "--max-batch", "8") as server:
        for clients in args.clients:
            run = run_load(f"127.0.0.1:{args.http_port}", MODEL_NAME, files, expected, clients=clients, seconds=args.seconds,
                           server_pid=server.pid)
            result["runs"].append(run)
            summary = summarise(run)
            result["summary"].setdefault("runs", []).append(summary)
            print(f"{clients} clients, {args.seconds:.0f} s: {summary['requests']} requests, "
                  f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, errors {summary['errors']}, "
                  f"mismatches {summary['mismatches']}, RSS {summary['rss_start_mb']:.0f} -> "
                  f"{summary['rss_end_mb']:.0f} MB (peak {summary['rss_peak_mb']:.0f})", flush=True)
    write_result(out, result)
    plot(result, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
