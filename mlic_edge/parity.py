"""Accuracy parity: the PyTorch reference vs exported models, on the same preprocessed images.

    report = run_parity("best.pt", ["m_fp32.onnx", "m_fp16.onnx", "m_int8.onnx"],
                        data="voc2007", data_root="data/VOC", split="test")
    report.passed, report.rows[0].delta_map, report.to_dicts()

Per model (`ParityRow`): mAP, delta mAP (model - reference, mAP points), CF1, OF1 (percent,
threshold 0.5), max/mean absolute logit error vs the reference, top-1 agreement (argmax of the
logits), passed (|delta mAP| <= the limit of the model's precision, `capabilities.parity_limits`).

Without labels (`image_dir=`), the reference's own decisions (score >= its per-class thresholds)
serve as targets: mAP then measures agreement with the reference (the reference scores 100).

Models are run through `_predict_logits(model_path, batches)`, i.e. `mlic_edge.runtime`'s backends:
ONNX on ONNX Runtime (CPU), TensorRT engines on their GPU, exactly as `infer` runs them.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .core.callable_module import make_callable
from .core.capabilities import model_format, parity_limits, precision_family
from .core.errors import DatasetError, ModelFileError
from .core.preprocess import Preprocessing
from .metrics import sigmoid

IN_MEMORY_LIMIT = 2 * 1024 ** 3  # preprocessed images kept in memory below this; streamed above


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ParityRow:
    """One model against the reference. The statistics come from `compare_logits`; the run's
    context (model file, images, timing) is added by `run_parity`."""

    model: str
    precision: str
    map: float                   # mAP of the model, percent
    reference_map: float
    delta_map: float             # model - reference, mAP points
    max_delta_map: float         # the pass limit on |delta_map|
    cf1: float
    of1: float
    max_abs_logit_error: float
    mean_abs_logit_error: float
    top1_agreement: float
    passed: bool
    images: int = 0
    targets: str = ""            # "labels", or "reference": the reference's own decisions
    source: str = ""
    same_checkpoint: bool = False
    seconds: float = 0.0
    reference_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The row as `mlic-edge parity --json` writes it."""
        return {_JSON_KEYS.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


# The keys of the JSON the CLI writes (ParityRow field -> key).
_JSON_KEYS = {"map": "mAP", "reference_map": "reference_mAP", "delta_map": "delta_mAP",
              "max_delta_map": "max_delta_mAP", "cf1": "CF1", "of1": "OF1",
              "max_abs_logit_error": "max_abs_logit_err", "mean_abs_logit_error": "mean_abs_logit_err"}


@dataclass(frozen=True)
class ParityReport:
    """Every model of one parity run, in the order given."""

    rows: list[ParityRow]

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def __iter__(self) -> Iterator[ParityRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as `mlic-edge parity --json` writes them."""
        return [row.to_dict() for row in self.rows]


# ----------------------------------------------------------------------------------- images
class ImageBatches:
    """Re-iterable batches of preprocessed images (float32 (B, 3, S, S)) with their targets.

    Small sets are materialised once; large ones are re-read (and re-preprocessed) on every pass,
    so memory stays at one batch per model.
    """

    def __init__(self, load: Callable[[], Iterator[tuple[np.ndarray, np.ndarray | None]]], count: int,
                 image_size: int, batch_size: int):
        self._load = load
        self.count = count
        self.batch_size = batch_size
        self._cached: list[np.ndarray] | None = None
        self.targets: np.ndarray | None = None
        self.labelled = True
        if count * 3 * image_size * image_size * 4 <= IN_MEMORY_LIMIT:
            self._cached = []
            targets = []
            for images, target in self._load():
                self._cached.append(images)
                targets.append(target)
            self._set_targets(targets)

    def _set_targets(self, targets: list) -> None:
        if targets and targets[0] is not None:
            self.targets = np.concatenate(targets)
        else:
            self.labelled = False
        self.count = sum(len(b) for b in self._cached) if self._cached is not None else self.count

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._cached is not None:
            yield from self._cached
            return
        targets = []
        for images, target in self._load():
            targets.append(target)
            yield images
        if self.targets is None:
            self._set_targets(targets)

    @classmethod
    def from_arrays(cls, images: np.ndarray, targets: np.ndarray | None, batch_size: int = 16) -> "ImageBatches":
        images = np.asarray(images, dtype=np.float32)

        def load():
            for i in range(0, len(images), batch_size):
                yield images[i:i + batch_size], None if targets is None else np.asarray(targets[i:i + batch_size])

        return cls(load, len(images), images.shape[-1], batch_size)


def _dataset_batches(name: str, root: str | os.PathLike | None, split: str, preprocess: dict,
                     batch_size: int, max_images: int | None, workers: int) -> ImageBatches:
    from .data import build_dataset, dataset_batches
    from .data.transforms import build_transform

    dataset = build_dataset(name, root, split, build_transform(preprocess, train=False))
    if getattr(dataset, "has_labels", True) is False:
        raise DatasetError(f"{name} split {split!r} has no public labels: parity needs a labelled split")
    count = min(len(dataset), max_images) if max_images is not None else len(dataset)
    indices = range(count) if count < len(dataset) else None

    def load():
        yield from dataset_batches(dataset, batch_size, indices=indices, workers=workers)

    return ImageBatches(load, count, Preprocessing.from_dict(preprocess).image_size, batch_size)


def _folder_batches(folder: str | os.PathLike, preprocess: dict, batch_size: int,
                    max_images: int | None) -> ImageBatches:
    import logging

    from .core.images import iter_batches, list_inputs

    if not Path(folder).is_dir():
        raise DatasetError(f"{folder}: image folder not found")
    files = list_inputs(folder, recursive=True)
    files = files[:max_images] if max_images else files

    def load():
        for batch in iter_batches(files, preprocess, batch_size):   # the image source `infer` reads
            for _, _, message in batch.failures:
                logging.getLogger(__name__).warning("%s; skipping it", message)
            if len(batch.images):
                yield batch.images, None

    return ImageBatches(load, len(files), Preprocessing.from_dict(preprocess).image_size, batch_size)


# ----------------------------------------------------------------------------------- backends
def _predict_logits(model_path: str | os.PathLike, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Logits (N, K) of a model file over preprocessed batches, through the same runtime
    backend `infer` and `bench` use (ONNX Runtime on the CPU, with the graph's recorded
    optimizer workarounds and static-batch padding; TensorRT engines on their GPU)."""
    from .runtime.backend import open_backend

    path = Path(model_path)
    device = "cpu" if model_format(path).backend == "onnxruntime" else "auto"
    with open_backend(path, device=device) as backend:
        return np.concatenate([backend.predict(images)["logits"] for images in batches]).astype(np.float32)


def _torch_logits(model, batches: Iterable[np.ndarray]) -> np.ndarray:
    import torch

    outputs = []
    with torch.no_grad():
        for images in batches:
            outputs.append(model(torch.from_numpy(images)).float().numpy())
    return np.concatenate(outputs)


def _model_precision(path: Path, num_classes: int, preprocess: dict, reference_sha: str) -> tuple[str, bool]:
    """(precision tag, same source checkpoint) from the model's metadata; checks compatibility."""
    if model_format(path).backend == "torch":
        return "unknown", False
    from .runtime.backend import read_model_metadata

    meta = read_model_metadata(path)  # ONNX metadata_props, or the engine's JSON sidecar
    if len(meta.classes) != num_classes:
        raise ModelFileError(f"{path}: {len(meta.classes)} classes, the reference has {num_classes}")
    theirs, ours = meta.preprocessing(str(path)), Preprocessing.from_dict(preprocess, "reference", ModelFileError)
    if theirs != ours:   # the same images must reach both: size, normalisation and resampling
        raise ModelFileError(f"{path}: preprocessing {theirs.to_dict()} differs from the reference's {ours.to_dict()}")
    return meta.precision, meta.source_sha256 == reference_sha


# ----------------------------------------------------------------------------------- comparison
def _evaluate(scores: np.ndarray, targets: np.ndarray) -> dict:
    from .metrics import evaluate
    return evaluate(scores, targets)


def compare_logits(reference_logits: np.ndarray, model_logits: np.ndarray, targets: np.ndarray,
                   precision: str, thresholds: dict[str, float] | None = None, model: str = "") -> ParityRow:
    """Parity statistics of one model's logits against the reference's, on shared targets.
    thresholds: pass limits per precision over `capabilities.parity_limits()`."""
    limits = {**parity_limits(), **(thresholds or {})}
    if model_logits.shape != reference_logits.shape:
        raise ModelFileError(f"model gives logits {model_logits.shape}, the reference {reference_logits.shape}")
    ref_metrics = _evaluate(sigmoid(reference_logits), targets)
    finite = bool(np.isfinite(model_logits).all())
    metrics = _evaluate(sigmoid(np.nan_to_num(model_logits)), targets)
    diff = np.abs(model_logits.astype(np.float64) - reference_logits)
    delta = metrics["mAP"] - ref_metrics["mAP"]
    limit = limits.get(precision_family(precision), limits["fp32"])
    passed = finite and math.isfinite(delta) and abs(delta) <= limit
    return ParityRow(
        model=model, precision=precision, map=float(metrics["mAP"]), reference_map=float(ref_metrics["mAP"]),
        delta_map=float(delta), max_delta_map=float(limit), cf1=float(metrics["CF1"]), of1=float(metrics["OF1"]),
        max_abs_logit_error=float(diff.max(initial=0.0)) if finite else float("inf"),
        mean_abs_logit_error=float(diff.mean()) if finite else float("inf"),
        top1_agreement=float(np.mean(model_logits.argmax(1) == reference_logits.argmax(1))),
        passed=bool(passed))


def _image_batches(preprocess: dict, *, data, data_root, split, image_dir, images, targets,
                   batch_size: int, max_images: int | None, workers: int) -> tuple[ImageBatches, str]:
    """(the parity images, a name for their source) from exactly one of a dataset, a folder or arrays."""
    if sum(x is not None for x in (data, image_dir, images)) != 1:
        raise DatasetError("parity needs exactly one image source: a dataset (--data), "
                           "an image folder (--images) or arrays")
    if data is not None:
        return _dataset_batches(data, data_root, split, preprocess, batch_size, max_images, workers), f"{data}:{split}"
    if image_dir is not None:
        return _folder_batches(image_dir, preprocess, batch_size, max_images), str(image_dir)
    images = images[:max_images] if max_images else images
    targets = targets[:max_images] if (max_images and targets is not None) else targets
    return ImageBatches.from_arrays(images, targets, batch_size), "arrays"


def _evaluation_targets(batches: ImageBatches, reference_logits: np.ndarray, per_class: Sequence[float] | None,
                        source: str) -> tuple[np.ndarray, str]:
    """(targets, their kind): the labels, or for unlabelled images the reference's own decisions
    (score >= its per-class thresholds)."""
    if batches.targets is not None:
        targets, kind = batches.targets, "labels"
    else:
        limits = np.asarray(per_class or [0.5] * reference_logits.shape[1], dtype=np.float64)
        targets, kind = (sigmoid(reference_logits) >= limits).astype(np.float32), "reference"
    if len(targets) != len(reference_logits):
        raise DatasetError(f"{source}: {len(targets)} targets for {len(reference_logits)} images")
    return targets, kind


def run_parity(
    reference_ckpt: str | os.PathLike,
    model_paths: Sequence[str | os.PathLike],
    *,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    split: str = "test",
    image_dir: str | os.PathLike | None = None,
    images: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    thresholds: dict[str, float] | None = None,
    max_images: int | None = None,
    batch_size: int = 16,
    workers: int = 0,
) -> ParityReport:
    """Run the reference checkpoint and every model on the same images; one `ParityRow` per model.

    Images come from a dataset (`data`, `data_root`, `split`; labelled), a folder (`image_dir`;
    unlabelled, the reference's decisions become the targets) or arrays (`images` already
    preprocessed (N, 3, S, S), optional `targets` (N, K)). thresholds: |delta mAP| pass limits
    per precision (e.g. {"int8": 0.5}) over the capability table's. Raises MLICError subclasses.
    """
    from .checkpoint import load_model
    from .core.files import file_sha256

    if not model_paths:
        raise ModelFileError("parity needs at least one model file")
    reference, ckpt = load_model(reference_ckpt)
    preprocess = dict(ckpt.get("preprocess") or reference.data_config())
    reference_sha = file_sha256(reference_ckpt)
    checked = [(Path(p), *_model_precision(Path(p), reference.cfg.num_classes, preprocess, reference_sha))
               for p in model_paths]
    batches, source = _image_batches(preprocess, data=data, data_root=data_root, split=split, image_dir=image_dir,
                                     images=images, targets=targets, batch_size=batch_size,
                                     max_images=max_images, workers=workers)
    started = time.time()
    reference_logits = _torch_logits(reference, batches)
    reference_seconds = round(time.time() - started, 3)
    eval_targets, target_kind = _evaluation_targets(batches, reference_logits, ckpt.get("thresholds"), source)
    rows = []
    for path, precision, same_source in checked:
        started = time.time()
        logits = _predict_logits(path, batches)
        row = compare_logits(reference_logits, logits, eval_targets, precision, thresholds, model=str(path))
        rows.append(dataclasses.replace(
            row, images=int(len(reference_logits)), targets=target_kind, source=source,
            same_checkpoint=same_source, seconds=round(time.time() - started, 3),
            reference_seconds=reference_seconds))
    return ParityReport(rows)


# ----------------------------------------------------------------------------------- layer-wise
def run_layerwise(reference_ckpt: str | os.PathLike, model_paths: Sequence[str | os.PathLike], *,
                  data: str | None = None, data_root: str | os.PathLike | None = None, split: str = "test",
                  image_dir: str | os.PathLike | None = None, images: np.ndarray | None = None,
                  num_images: int = 8, fp32_graph: str | os.PathLike | None = None,
                  work_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """`layerwise.compare_layers` for every fp16 / int8 ONNX model against the fp32 graph, on the
    first `num_images` images of the parity source. fp32_graph: the fp32 ONNX the models were
    converted from; default: exported from the reference checkpoint (same exporter, same tensor
    names) into `work_dir` (a temporary folder by default)."""
    import tempfile

    from .checkpoint import load_model
    from .core.onnx_metadata import read_metadata
    from .layerwise import compare_layers

    candidates = [Path(p) for p in model_paths if model_format(p).backend == "onnxruntime"
                  and precision_family(read_metadata(p).precision) != "fp32"]
    if not candidates:
        return []
    _, ckpt = load_model(reference_ckpt)
    preprocess = dict(ckpt.get("preprocess") or {})
    if images is None:
        batches = (_dataset_batches(data, data_root, split, preprocess, num_images, num_images, 0)
                   if data is not None else _folder_batches(image_dir, preprocess, num_images, num_images))
        images = next(iter(batches))
    images = images[:num_images]
    with tempfile.TemporaryDirectory(prefix="mlic-layers-", dir=work_dir) as tmp:
        if fp32_graph is None:
            from .export import export_onnx
            batch = read_metadata(candidates[0]).extra.get("batch")
            fp32_graph = export_onnx(reference_ckpt, Path(tmp) / "fp32.onnx",
                                     batch=batch if isinstance(batch, int) else None).path
        return [compare_layers(fp32_graph, path, images) for path in candidates]


# `mlic_edge.parity(...)` runs `run_parity(...)`.
make_callable(__name__, "mlic_edge.parity:run_parity")
