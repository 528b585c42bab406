"""The one parser of device strings (--device, train.device, `load(device=...)`).

Forms: auto | cpu | cuda | cuda:N | tensorrt, as listed in `capabilities.DEVICE_KINDS`. Whether
the device exists on this machine is the backend's question; this module only reads the text,
so a malformed value ('gpu', 'cuda:x') is one line before anything is built.
"""
from __future__ import annotations

from dataclasses import dataclass

from .capabilities import DEVICE_KINDS
from .errors import ConfigError


@dataclass(frozen=True)
class Device:
    """A parsed device: its kind and, for cuda:N, its index."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return DEVICE_KINDS[self.kind].needs_gpu

    @property
    def gpu_index(self) -> int:
        """The CUDA ordinal this device means (0 for plain 'cuda')."""
        return self.index or 0


def expected(kinds=None) -> str:
    """'auto, cpu, cuda, cuda:N or tensorrt': the accepted forms, for error messages and --help."""
    forms = []
    for name in kinds or DEVICE_KINDS:
        forms += [name, f"{name}:N"] if DEVICE_KINDS[name].indexed else [name]
    return ", ".join(forms[:-1]) + f" or {forms[-1]}"


def parse_device(spec, what: str = "--device", kinds=None) -> Device:
    """Device from 'auto', 'cpu', 'cuda', 'cuda:N' or 'tensorrt' (a Device passes through);
    `kinds` narrows the accepted kinds (training takes no 'tensorrt'). One-line ConfigError else."""
    allowed = tuple(kinds or DEVICE_KINDS)
    if isinstance(spec, Device) and spec.kind in allowed:
        return spec
    text = str(spec).strip().lower()
    name, sep, index = text.partition(":")
    kind = DEVICE_KINDS.get(name)
    valid = kind is not None and name in allowed and (
        not sep or (kind.indexed and index.isdigit()))
    if not valid:
        raise ConfigError(f"{what} {str(spec)!r}: unknown device; expected {expected(allowed)}")
    return Device(name, int(index) if sep else None)
