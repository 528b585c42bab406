"""File utilities without torch: atomic writes and content hashes.

A crash or Ctrl-C leaves either the old file or the complete new one, never half of one: data goes
to a temp file beside the target, is fsynced, then renamed over it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """`with atomic_open(p) as f: f.write(...)`: p appears (complete) only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (checkpoints, ONNX graphs: cache keys and provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_folder(target: str | os.PathLike, write: Callable[[Path], None],
                 is_complete: Callable[[Path], bool]) -> Path:
    """`target`, built by write(staging folder) and renamed into place, unless is_complete(target)
    already. An interrupted build never leaves a half-written folder that a later run would trust;
    an older or different one (is_complete false) is replaced; a concurrent builder that got there
    first wins. `write` must leave what is_complete checks (a manifest) last."""
    target = Path(target)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            if is_complete(target):
                return target
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cache_dir(kind: str) -> Path:
    """$MLIC_EDGE_CACHE/<kind>, default ~/.cache/mlic-edge/<kind> (digits set, calibration
    tensors, TensorRT timing caches)."""
    base = os.environ.get("MLIC_EDGE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "mlic-edge") / kind


def ensure_writable(path: str | os.PathLike) -> Path:
    """Check, before any long work, that a file can be written at `path` (its folder is created);
    one-line ConfigError naming the path otherwise."""
    from .errors import ConfigError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise ConfigError(f"{path}: cannot write there ({e.strerror or type(e).__name__})") from None
    return path
