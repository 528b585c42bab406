"""`mlic-edge serve` (Triton through PyTriton) and `infer --server` on the tiny trained model.

The server runs as a subprocess on free loopback ports; every request and wait is bounded and the
fixture kills the server (and its tritonserver child, via the process group) whatever happens.
They run in the project's one environment (`pip install -e ".[dev]"` includes the serve extra) and
never skip there: a missing PyTriton is an error, not a skip.
"""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import pytriton  # noqa: F401,E402  (the serve extra; part of dev)

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _metrics(port: int, model: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        for key in ("nv_inference_request_success", "nv_inference_exec_count", "nv_inference_count"):
            if line.startswith(key + "{") and f'model="{model}"' in line:
                found[key] = float(line.rsplit(" ", 1)[1])
    return found


def _start_server(model: Path, name: str, log: Path) -> tuple[subprocess.Popen, int, int, int]:
    http, grpc, metrics = _free_ports(3)
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlic_edge", "serve", str(model), "--name", name,
             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
             "--max-batch", "8", "--max-queue-delay-us", "20000"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, http, grpc, metrics


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    process, http, grpc, metrics = _start_server(trained["fp32"], "tiny", log)
    try:
        from mlic_edge.serve.server import wait_ready

        try:
            wait_ready(f"http://127.0.0.1:{http}", timeout_s=START_TIMEOUT_S)
        except Exception:
            pytest.fail(f"server did not start: {log.read_text(errors='replace')[-3000:]}")
        yield {"process": process, "http": http, "grpc": grpc, "metrics": metrics, "log": log}
    finally:
        _kill(process)


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {Path(row["path"]).name: row for row in csv.DictReader(f)}


def test_infer_server_matches_local(server, trained, tmp_path):
    from mlic_edge.runtime.infer import run_inference

    images = trained["data_root"] / "test"
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    run_inference(images, trained["fp32"], local, batch_size=8, progress=False)
    done = subprocess.run([sys.executable, "-m", "mlic_edge", "infer", str(images), "--server",
                           f"localhost:{server['http']}", "-o", str(remote), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = _rows(local), _rows(remote)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert a[key]["labels"] == b[key]["labels"], key
        for column in a[key]:
            if column.startswith("score_"):
                assert abs(float(a[key][column]) - float(b[key][column])) <= 2e-6


def test_grpc_api_and_resume_key(server, trained):
    import mlic_edge

    files = sorted((trained["data_root"] / "test").glob("*.png"))[:5]
    with mlic_edge.load(f"grpc://127.0.0.1:{server['grpc']}/tiny") as remote, \
            mlic_edge.load(trained["fp32"]) as local:
        assert remote.classes == local.classes
        np.testing.assert_allclose(remote.thresholds, local.thresholds)
        for r, l in zip(remote.predict(files), local.predict(files)):
            assert r.labels == l.labels
            assert all(abs(r.scores[c] - l.scores[c]) <= 2e-6 for c in l.scores)
        assert remote.url == f"grpc://127.0.0.1:{server['grpc']}/tiny"
        assert remote.describe()["backend"].startswith("triton")


def test_requests_carry_the_servers_max_batch(server, trained):
    from mlic_edge.runtime.remote import RemoteTagger

    files = sorted((trained["data_root"] / "test").glob("*.png"))
    files = (files * 64)[:61]
    before = _metrics(server["metrics"], "tiny")
    with RemoteTagger(f"http://127.0.0.1:{server['http']}/tiny", timeout_s=60) as remote:
        assert remote.max_batch == 8                                  # the server's --max-batch
        predictions = remote.predict(files)
    after = _metrics(server["metrics"], "tiny")
    assert [p.source for p in predictions] == [str(f) for f in files] and all(p.ok for p in predictions)
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    images = after["nv_inference_count"] - before["nv_inference_count"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert images == 61
    assert requests == 8                                              # 7 full requests and one of 5
    assert executions <= requests


def test_whole_request_failure_is_split_into_rows(server, trained, monkeypatch):
    """A server that fails a request as a whole for one bad image (an export-triton ensemble
    does): the request is sent again one row per request, and only that row fails."""
    from mlic_edge.runtime.remote import RemoteTagger

    good = sorted((trained["data_root"] / "test").glob("*.png"))[:3]
    bad = good[0].parent.parent / "not-an-image.png"
    with RemoteTagger(f"grpc://127.0.0.1:{server['grpc']}/tiny", timeout_s=60) as remote:
        send = remote._send
        marker = good[1].read_bytes()

        def ensemble_like(data):
            if any(d == marker for d in data):
                raise RuntimeError("[StatusCode.INTERNAL] in ensemble 'tiny', cannot decode")
            return send(data)

        monkeypatch.setattr(remote, "_send", ensemble_like)
        rows = remote.predict([good[0], good[1], good[2], bad])
        expected = [p.labels for p in remote.predict([good[0], good[2]])]
    assert [r.ok for r in rows] == [True, False, True, False]
    assert "cannot decode" in rows[1].error and rows[3].error.endswith("image file not found")
    assert [rows[0].labels, rows[2].labels] == expected


def test_corrupt_image_fails_its_row_only(server, trained, tmp_path):
    import mlic_edge

    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    good = sorted((trained["data_root"] / "test").glob("*.png"))[:2]
    with mlic_edge.load(f"http://127.0.0.1:{server['http']}/tiny") as remote:
        first = remote.predict([good[0], bad, good[1]])
        assert first[0].ok and first[2].ok
        assert not first[1].ok and "corrupt.png" in first[1].error and "cannot decode" in first[1].error
        again = remote.predict([good[0]])                              # the server goes on
        assert again[0].ok and again[0].labels == first[0].labels
    assert server["process"].poll() is None


def _health_ready(http: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_client_started_the_instant_health_is_ready_tags_correctly(trained, tmp_path):
    """Health turns ready only once every served model is loaded: a client started at that instant
    (discovering the model, not naming it) tags as a local model does. A second client, started
    with --wait before the server answers at all, waits for it and tags the same."""
    import mlic_edge
    from concurrent.futures import ThreadPoolExecutor

    files = sorted((trained["data_root"] / "test").glob("*.png"))[:6]
    with mlic_edge.load(trained["fp32"]) as local:
        expected = [p.labels for p in local.predict(files)]
    process, http, grpc, _ = _start_server(trained["fp32"], "tiny", tmp_path / "server.log")

    def waiting_client() -> list:
        with mlic_edge.load(f"grpc://127.0.0.1:{grpc}", wait_s=START_TIMEOUT_S) as remote:
            return [p.labels for p in remote.predict(files)]

    try:
        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(waiting_client)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _health_ready(http):
                assert process.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "server.log").read_text(errors="replace")[-3000:]
                time.sleep(0.01)
            with mlic_edge.load(f"http://127.0.0.1:{http}") as remote:
                assert [p.labels for p in remote.predict(files)] == expected
            assert waited.result(timeout=START_TIMEOUT_S) == expected
    finally:
        _kill(process)


def test_wait_runs_out_with_one_line(tmp_path):
    """No server: --wait polls for that long, then one line naming the URL, model and seconds."""
    (port,) = _free_ports(1)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mlic_edge", "infer", str(tmp_path), "--server",
                           f"http://127.0.0.1:{port}/tiny", "--wait", "1.5", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"http://127.0.0.1:{port}/tiny: model tiny not ready after 1.5 s" in lines[0]
    assert "no Triton server answers" in lines[0]
    assert time.monotonic() - started >= 1.5


def test_sigterm_stops_cleanly(server):
    process = server["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0, server["log"].read_text(errors="replace")[-2000:]
    assert time.monotonic() - started < STOP_TIMEOUT_S
