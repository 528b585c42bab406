"""Errors of the export stage. All are MLICErrors: the CLI prints them as one line."""
from __future__ import annotations

from ..core.errors import DatasetError, MLICError


class ExportError(MLICError):
    """The model could not be turned into a valid ONNX graph of the requested kind."""


class ExportParityError(ExportError):
    """The exported graph does not compute what the PyTorch model computes."""


class UnsupportedOpsError(ExportError):
    """The graph holds operators (or op variants) TensorRT's ONNX parser cannot take."""


class CalibrationError(DatasetError):
    """No usable calibration images (empty folder, unreadable images, wrong source)."""


class MissingDependencyError(ExportError):
    """An optional export dependency (nvidia-modelopt, onnx-graphsurgeon, ...) is not installed."""
