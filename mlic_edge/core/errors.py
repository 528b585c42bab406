"""User-facing errors. The CLI prints any `MLICError` as one line (no traceback) and exits 2.

Messages name the file and the problem, e.g. "data/train.csv:12: label 'kat' is not in classes.txt".
Importable without torch.
"""
from __future__ import annotations

from pathlib import Path


class MLICError(Exception):
    """Base of every error caused by the user's input or files."""


class ConfigError(MLICError, ValueError):
    """A configuration value or file is invalid."""


class DatasetError(MLICError):
    """A dataset folder, annotation file or image is missing or malformed."""


class CheckpointError(MLICError):
    """A checkpoint cannot be read or does not hold what mlic-edge writes."""


class ModelFileError(MLICError):
    """An ONNX file or engine cannot be read, or lacks mlic-edge metadata."""


class BackendUnavailable(MLICError):
    """The backend a model file needs (TensorRT, a GPU, torch, ...) is not installed here."""


# The export stage's errors (ONNX graphs, calibration, engine builds).

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


# The training stage's errors.


class TrainingError(MLICError):
    """A run that cannot go on: a non-finite loss, splits that disagree, no memory for one image."""


class TrainingInterrupted(MLICError):
    """Ctrl-C during training. `last_checkpoint` holds the state to resume from (None when the run
    was aborted before its first save); `epoch` and `step` say where it stopped; `train(...,
    resume=True)` on `out_dir` continues exactly there."""

    def __init__(self, message: str, out_dir: Path, epoch: int, step: int):
        super().__init__(message)
        self.out_dir = Path(out_dir)
        self.epoch, self.step = epoch, step

    @property
    def last_checkpoint(self) -> Path | None:
        path = self.out_dir / "last.pt"
        return path if path.is_file() else None


def one_line(error: BaseException, limit: int | None = None) -> str:
    """An exception's message on one line (and at most `limit` characters), or its type's name
    when it has none: what a one-line error says about its cause."""
    text = " ".join(str(error).split())
    return (text[:limit] if limit else text) or type(error).__name__
