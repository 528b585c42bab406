"""Options shared by several verbs, declared once (typer `Annotated` types): data, device, precision
and the INT8 calibration group. A flag name means one thing on every command; a renamed flag keeps
its old spelling as a hidden, deprecated alias for one release (`renamed`). Dataset names in the
help come from `data.registry`, devices and precisions from `core.capabilities`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from ..core.capabilities import EXPORT_TARGETS, PRECISIONS, TRAIN_DEVICE_KINDS, check_precision
from ..core.devices import expected, parse_device
from ..core.errors import ConfigError
from ..data.registry import dataset_help

# ---------------------------------------------------------------------------------------- data
Data = Annotated[Optional[str], typer.Option("--data", help=dataset_help())]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", help="Dataset folder (VOCdevkit, the COCO root, or a folder with <split>.csv); not needed for digits.")]

# ---------------------------------------------------------------------------------------- device
def _device(value: str) -> str:
    return str(parse_device(value))


def _train_device(value: Optional[str]) -> Optional[str]:
    return value if value is None else str(parse_device(value, kinds=TRAIN_DEVICE_KINDS))


# A malformed value ('gpu', 'cuda:x') is a ConfigError: one line, exit 2, before anything runs.
Device = Annotated[str, typer.Option("--device", callback=_device, help=f"{expected()} (tensorrt: ONNX Runtime's TensorRT provider, .onnx only).")]
TrainDevice = Annotated[Optional[str], typer.Option("--device", callback=_train_device, help=f"{expected(TRAIN_DEVICE_KINDS)} (default: the recipe's train.device, auto).")]

# ---------------------------------------------------------------------------------------- precision
def precision_callback(value: Optional[str]) -> Optional[str]:
    return value if value is None else check_precision(value).name


PRECISION_HELP = "; ".join(f"{p.name}: {p.about}" for p in PRECISIONS.values())
TARGET_HELP = "; ".join(f"{t.name}: {t.about}" for t in EXPORT_TARGETS.values())


def renamed(value, alias_value, *, new: str, old: str, default=None):
    """The value of a renamed flag: the new spelling wins; the old one still works for one release,
    with a one-line warning on stderr."""
    if alias_value is None:
        return value
    typer.secho(f"warning: {old} is deprecated and will be removed in the next release; use {new}",
                fg=typer.colors.YELLOW, err=True)
    if value not in (None, default) and value != alias_value:
        raise ConfigError(f"{old} (deprecated) and {new} disagree: {alias_value!r} vs {value!r}; give {new} only")
    return alias_value

# ---------------------------------------------------------------------------------------- calibration
Calib = Annotated[Optional[Path], typer.Option("--calib", help="int8: folder of calibration images (searched recursively; real images, not noise).")]
CalibData = Annotated[Optional[str], typer.Option("--calib-data", help=dataset_help("int8: calibrate on a dataset instead"))]
CalibRoot = Annotated[Optional[Path], typer.Option("--calib-root", help="int8: dataset folder for --calib-data.")]
CalibSplit = Annotated[str, typer.Option("--calib-split", help="int8: dataset split for --calib-data.")]
CalibImages = Annotated[int, typer.Option("--calib-images", help="int8: number of calibration images (seeded random pick; preprocessed once into $MLIC_EDGE_CACHE/calib).")]
CalibMethod = Annotated[Optional[str], typer.Option("--calib-method", help="int8: activation range calibration: entropy | max (default: entropy for tensorrt, max for cpu).")]
CalibBatch = Annotated[int, typer.Option("--calib-batch", help="int8: images per calibration step; 0 (default): up to 8, fewer when one step's calibrated activations would pass 1 GiB (ResNet101 @448: 4). Memory holds one step, whatever --calib-images is; the ranges do not depend on it.")]


def calib_source(precision: str | None, calib: Optional[Path], calib_data: Optional[str],
                 calib_root: Optional[Path], calib_split: str):
    """The int8 calibration source from the --calib* options (export and build-engine), or None."""
    from ..export.calibration import DatasetSource

    if calib is not None and calib_data is not None:
        raise ConfigError("give either --calib DIR or --calib-data NAME, not both")
    if calib_root is not None and calib_data is None:
        raise ConfigError("--calib-root needs --calib-data NAME")
    if precision != "int8" and (calib is not None or calib_data is not None):
        raise ConfigError(f"calibration images are only used for int8 (got {precision or 'the source precision'})")
    if calib is not None:
        return calib
    return DatasetSource(calib_data, str(calib_root) if calib_root else None, calib_split) if calib_data else None
