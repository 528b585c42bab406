"""`mlic-edge serve` (Triton through PyTriton) and `infer --server` on the tiny trained model.

The server runs as a subprocess on free loopback ports; every request and wait is bounded and the
fixture kills the server (and its tritonserver child, via the process group) whatever happens.
They run in the project's one environment (`pip install -e ".[dev]"` includes the serve extra) and
never skip there: a missing PyTriton is an error, not a skip.
"""
from __future__ import annotations

import base64
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

import pytriton  # noqa: F401,E402  (the serve extra; part of dev)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
MAX_REQUEST_MB = 1          # the fixture server's --max-request-mb


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
             "--max-batch", "8", "--max-queue-delay-us", "20000", "--max-request-mb", str(MAX_REQUEST_MB)],
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


# ----------------------------------------------------------------------------------- bad requests
def _post(port: int, model: str, body: bytes) -> tuple[int, dict]:
    """A raw KServe v2 HTTP request: (status, the JSON answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _images_request(*files: bytes) -> bytes:
    """One request of several images, base64-encoded as KServe JSON carries BYTES (as curl sends)."""
    return json.dumps({"inputs": [{"name": "image", "shape": [len(files), 1], "datatype": "BYTES",
                                   "data": [base64.b64encode(f).decode() for f in files]}]}).encode()


def _output(reply: dict, output: str) -> list:
    return next(o["data"] for o in reply["outputs"] if o["name"] == output)


@pytest.fixture(scope="module")
def good_image(trained) -> tuple[bytes, str]:
    """A test image's bytes and the labels a local model gives it (';'-joined)."""
    from mlic_edge.runtime.tagger import Tagger

    path = sorted((trained["data_root"] / "test").glob("*.png"))[0]
    with Tagger(trained["fp32"], device="cpu") as local:
        return path.read_bytes(), ";".join(local.predict([path])[0].labels)


def _assert_serves(server, good_image) -> None:
    """The next good request is answered with the local labels, and the server still runs."""
    status, reply = _post(server["http"], "tiny", _images_request(good_image[0]))
    assert status == 200, reply
    assert _output(reply, "error") == [""] and _output(reply, "labels") == [good_image[1]]
    assert server["process"].poll() is None


def _bomb_png(side: int) -> bytes:
    """A valid greyscale PNG of side x side black pixels whose compressed data is a few hundred
    kB: decoded, it would take side**2 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    packer, row = zlib.compressobj(9), b"\0" * (side + 1)          # filter byte + the row's pixels
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])   # 8-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# Requests Triton itself refuses (KServe v2 errors), each with what its answer must name.
REFUSED_BY_TRITON = {
    "malformed JSON": ("tiny", b'{"inputs": [{"name": "image", ', "failed to parse the request JSON"),
    "wrong dtype": ("tiny", json.dumps({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "FP32",
                                                    "data": [1.0]}]}).encode(), "data-type is 'FP32'"),
    "wrong shape": ("tiny_tensor", json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 2, 2],
                                                           "datatype": "FP32", "data": [0.0] * 12}]}).encode(),
                    "unexpected shape for input 'images'"),
    "empty inputs": ("tiny", json.dumps({"inputs": []}).encode(), "expected 1 inputs but got 0"),
}


@pytest.mark.parametrize("kind", list(REFUSED_BY_TRITON))
def test_malformed_request_fails_alone(server, good_image, kind):
    model, body, named = REFUSED_BY_TRITON[kind]
    status, reply = _post(server["http"], model, body)
    assert 400 <= status < 600 and named in reply["error"], (status, reply)
    _assert_serves(server, good_image)


@pytest.mark.parametrize("kind", ["non-image bytes", "decompression bomb"])
def test_undecodable_image_fails_its_row_only(server, good_image, kind):
    """The bad image and a good one in one request: the bad row has its error, the good row its
    labels; then the next request is served."""
    bad = b"plain text, not an image" if kind == "non-image bytes" else _bomb_png(20_000)   # 400 Mpixels
    assert len(bad) < MAX_REQUEST_MB * 2**20 / 2          # under the size limit, base64 included
    status, reply = _post(server["http"], "tiny", _images_request(bad, good_image[0]))
    assert status == 200, reply
    errors, labels = _output(reply, "error"), _output(reply, "labels")
    named = "not a known image format" if kind == "non-image bytes" else "decompression bomb"
    assert named in errors[0] and labels[0] == ""
    assert errors[1] == "" and labels[1] == good_image[1]
    _assert_serves(server, good_image)


def test_request_over_the_size_limit_fails_alone(server, good_image):
    big = os.urandom(MAX_REQUEST_MB * 2**20 + 1024)        # sent as base64: 4/3 of that
    status, reply = _post(server["http"], "tiny", _images_request(big))
    assert status == 200, reply
    assert f"exceeds the server's limit of {MAX_REQUEST_MB} MB" in _output(reply, "error")[0]
    assert "--max-request-mb" in _output(reply, "error")[0] and _output(reply, "labels") == [""]
    _assert_serves(server, good_image)


def test_oversized_request_is_refused_whole_and_alone():
    from mlic_edge.serve.server import refuse_oversized

    small = {"image": np.array([[b"a" * 100], [b"b" * 100]], dtype=object)}
    large = {"image": np.array([[b"c" * 700], [b"d" * 400]], dtype=object)}     # 1100 bytes together
    requests = refuse_oversized([small, large], 1000 / 2**20)                    # a 1000-byte limit
    assert [r for r in requests[0]["refused"].reshape(-1)] == ["", ""]
    assert requests[0]["image"].reshape(-1).tolist() == [b"a" * 100, b"b" * 100]
    assert all("request of 0.0 MB exceeds" in r for r in requests[1]["refused"].reshape(-1))
    assert requests[1]["image"].reshape(-1).tolist() == [b"", b""]


# ----------------------------------------------------------------------------------- load over time
def test_clients_for_seconds_zero_errors_local_labels_flat_memory(server, trained):
    """4 clients for 4 s (closed loop, one image per request): no errors, every answer's labels
    equal the local model's, and the server's memory after warm-up (the first second) grows by
    less than 32 MB: a generous bound that a leak of 1 MB per batch exceeds within the run."""
    from serve_load import expected_labels, run_load

    files = sorted((trained["data_root"] / "test").glob("*.png"))[:16]
    run = run_load(f"127.0.0.1:{server['http']}", "tiny", files, expected_labels(trained["fp32"], files),
                   clients=4, seconds=4, server_pid=server["process"].pid, sample_s=0.25)
    assert run["errors"] == [] and run["mismatches"] == []
    assert len(run["requests"]) >= 2 * 4, len(run["requests"])       # every client went round
    warm = [rss for t, rss in run["rss"] if t >= 1.0]
    assert len(warm) >= 8
    assert max(warm) <= warm[0] + 32 * 2**20, [r // 2**20 for r in warm]


# ----------------------------------------------------------------------------------- video
@pytest.mark.parametrize("sampling", [["--fps", "4"], ["--every", "3"]])
def test_infer_video_through_the_server_matches_local(server, trained, tmp_path, sampling):
    """A lossless H.264 clip of four test images: `infer clip.mp4 --server` gives the rows and the
    segments that `infer clip.mp4 -m model.onnx` gives."""
    from PIL import Image

    from mlic_edge.runtime.segments import read_segments
    from mlic_edge.runtime.video import write_slideshow

    names = ["0000.png", "0002.png", "0005.png", "0010.png"]
    pictures = [np.asarray(Image.open(trained["data_root"] / "test" / n).convert("RGB")) for n in names]
    clip = tmp_path / "clip.mp4"
    write_slideshow(pictures, clip, seconds_per_image=1.0, fps=10, lossless=True)
    found = {}
    for where, target in (("local", ["-m", str(trained["fp32"])]),
                          ("server", ["--server", f"localhost:{server['http']}"])):
        rows, segments = tmp_path / f"{where}.csv", tmp_path / f"{where}-segments.csv"
        done = subprocess.run([sys.executable, "-m", "mlic_edge", "infer", str(clip), *target, *sampling,
                               "-o", str(rows), "--segments", str(segments), "--no-progress"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with open(rows, newline="") as f:
            found[where] = (list(csv.DictReader(f)), read_segments(segments))
    (local_rows, local_segments), (served_rows, served_segments) = found["local"], found["server"]
    assert len(local_rows) == len(served_rows) >= 8
    assert len({r["labels"] for r in local_rows}) >= 2                   # the scenes differ
    for a, b in zip(local_rows, served_rows):
        assert (a["path"], a["frame"], a["time_s"], a["labels"], a["error"]) == \
            (b["path"], b["frame"], b["time_s"], b["labels"], b["error"])
        for column in (c for c in a if c.startswith("score_")):
            assert abs(float(a[column]) - float(b[column])) <= 2e-6, (a["frame"], column)
    assert local_segments and [(s.label, s.start_s, s.end_s, s.frames) for s in local_segments] == \
        [(s.label, s.start_s, s.end_s, s.frames) for s in served_segments]
    assert [s.peak_score for s in served_segments] == pytest.approx([s.peak_score for s in local_segments], abs=2e-6)


def test_sigterm_stops_cleanly(server):
    process = server["process"]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0, server["log"].read_text(errors="replace")[-2000:]
    assert time.monotonic() - started < STOP_TIMEOUT_S
