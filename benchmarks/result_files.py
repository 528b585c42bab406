"""Result files: what a benchmark measured, with what it takes to trust it.

Every benchmark writes one JSON file through `new_result` and `write_result`:

    {"name", "command", "commit", "dirty", "date", "machine", "packages", "settings",
     "runs": [one dict per measured run: the raw numbers], "summary": {derived figures}}

Results that back a published table are committed under `benchmarks/results/<date>-<name>/`
and rendered into the docs by `benchmarks/report.py` (never typed). Standard library only, so
that `report.py --check` runs anywhere.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("mlic-edge", "torch", "timm", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu",
            "tensorrt-rtx-cu13", "nvidia-modelopt", "nvidia-pytriton", "tritonclient", "pillow", "av")


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=REPO).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state() -> dict:
    """The commit the measuring code came from, and whether the tree differed from it."""
    commit = _run(["git", "rev-parse", "HEAD"])
    changed = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit or None, "dirty": bool(changed)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpus() -> list[dict]:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    return [dict(zip(("name", "driver", "memory"), (part.strip() for part in line.split(","))))
            for line in out.splitlines() if line.strip()]


def machine() -> dict:
    """CPU model, cores, memory, GPUs and drivers (if any), OS and Python, and the load at start."""
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(), "gpus": _gpus(),
        "os": platform.platform(), "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def packages(extra: tuple[str, ...] = ()) -> dict:
    """Installed versions of the packages that decide the figures (absent ones left out)."""
    versions = {}
    for name in (*PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed from the repository root: `python benchmarks/NAME.py ARGS`."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = str(script.relative_to(REPO))
    except ValueError:
        argv[0] = script.name
    return shlex.join(["python", *argv])


def new_result(name: str, settings: dict | None = None, argv: list[str] | None = None) -> dict:
    """The header of a result file; the benchmark appends to `runs` and fills `summary`."""
    return {
        "name": name, "command": command_line(argv), **git_state(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "packages": packages(), "settings": settings or {},
        "runs": [], "summary": {},
    }


def result_dir(name: str, date: str | None = None) -> Path:
    """benchmarks/results/<date>-<name>/, the folder a committed result lives in."""
    return RESULTS / f"{date or _dt.date.today().isoformat()}-{name}"


def write_result(path: str | Path, result: dict) -> Path:
    """Write atomically (a crash mid-run leaves the previous file whole)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_result(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def describe_machine(info: dict) -> str:
    """One line: 'AMD EPYC 7B13, 2 cores, 23.4 GiB' (+ GPUs); what a file did not record is left out."""
    gpus = info.get("gpus") or []
    parts = [info["cpu"]] if info.get("cpu") else ([] if gpus else ["unknown CPU"])
    if info.get("cores"):
        parts.append(f"{info['cores']} cores")
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']} GiB")
    parts += [gpu["name"] + (f" (driver {gpu['driver']})" if gpu.get("driver") else "") for gpu in gpus]
    return ", ".join(parts)
