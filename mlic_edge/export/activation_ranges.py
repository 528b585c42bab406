"""Activation ranges for INT8, measured on ONNX Runtime one calibration batch at a time.

The fp32 graph gets the tensors to quantize as extra outputs; each batch's values are reduced at
once to running statistics and dropped, so memory is one batch's activations whatever the number
of images:

* exact running min and max of every tensor (all elements);
* for the entropy method, a histogram of |x| with NUM_BINS bins over [0, R], R a power of two
  (bins stay aligned when a later batch widens the range: R doubles and pairs of bins merge,
  exactly, so the histogram does not depend on how the images were batched). It is filled from at
  most SAMPLE_PER_IMAGE elements per image and tensor, drawn uniformly with a fixed seed: an
  unbiased sample of the bulk, while the exact maximum sets the range. On ResNet101 @448 a full
  histogram of every activation costs more than the inference itself.

The entropy threshold is TensorRT's (the "8-bit inference with TensorRT" method, as in
IInt8EntropyCalibrator2): the clip point whose 128-level quantization of the clipped histogram
has the least KL divergence from it. Ranges go to ONNX Runtime's QDQ quantizer (precision.py).
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_BINS = 4096            # over [0, R] with R = the next power of two >= max|x|: >= 2048 bins on the data
QUANT_LEVELS = 128         # int8 levels on one side of zero
SAMPLE_PER_IMAGE = 1 << 16  # histogram elements per image and tensor, at most
STEP_BYTES = 1024 ** 3     # requested activations per calibration step, at most
MAX_STEP = 8               # images per calibration step, at most


@dataclass
class TensorStats:
    """Running statistics of one tensor."""
    minimum: float = np.inf
    maximum: float = -np.inf
    histogram: np.ndarray | None = None   # counts of |x| over NUM_BINS bins of [0, hist_range]
    hist_range: float = 0.0
    count: int = 0

    @property
    def amax(self) -> float:
        return float(max(abs(self.minimum), abs(self.maximum)))

    def update(self, values: np.ndarray, images: int, rng: np.random.Generator | None) -> None:
        flat = values.reshape(-1)
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))
        self.count += flat.size
        if rng is None:
            return
        if flat.size > SAMPLE_PER_IMAGE * images:
            flat = flat[rng.integers(0, flat.size, SAMPLE_PER_IMAGE * images)]
        self._add_to_histogram(np.abs(flat), self.amax)

    def _add_to_histogram(self, magnitudes: np.ndarray, amax: float) -> None:
        if self.histogram is None:
            self.histogram = np.zeros(NUM_BINS, np.int64)
        if self.hist_range == 0.0 and amax > 0:    # first non-zero values: all counts so far are zeros (bin 0)
            self.hist_range = _power_of_two_at_least(amax)
        while amax > self.hist_range:              # widen: R doubles, pairs of bins merge (exact)
            merged = self.histogram.reshape(-1, 2).sum(axis=1)
            self.histogram = np.concatenate([merged, np.zeros(NUM_BINS - merged.size, np.int64)])
            self.hist_range *= 2
        if self.hist_range == 0.0:
            self.histogram[0] += magnitudes.size
            return
        index = np.minimum((magnitudes * (NUM_BINS / self.hist_range)).astype(np.int64), NUM_BINS - 1)
        self.histogram += np.bincount(index, minlength=NUM_BINS)

    def range(self, method: str, symmetric: bool) -> tuple[float, float]:
        """(rmin, rmax) to quantize this tensor with. symmetric: (-t, t) (TensorRT's int8);
        else the data's own min/max, clipped to +-t by the entropy threshold."""
        if method == "entropy" and self.histogram is not None and self.hist_range > 0:
            threshold = min(entropy_threshold(self.histogram) * self.hist_range / NUM_BINS, self.amax)
        else:
            threshold = self.amax
        if symmetric:
            return -threshold, threshold
        return max(self.minimum, -threshold), min(self.maximum, threshold)


def _power_of_two_at_least(value: float) -> float:
    return float(2.0 ** np.ceil(np.log2(value))) if value > 0 else 0.0


def entropy_threshold(histogram: np.ndarray, levels: int = QUANT_LEVELS, candidates: int = 2048) -> int:
    """Number of bins (from zero) to keep: the clip point with the least KL(P || Q), where P is the
    histogram clipped there (outliers folded into its last bin) and Q is the kept bins without the outliers, quantized
    to `levels` levels (each level's mass spread over its non-empty bins). Bins past the last
    non-empty one are never better than it, so the search stops there; clip points are tried
    every ceil(last / candidates) bins, TensorRT's resolution (2048 bins up to the maximum)."""
    histogram = np.array(histogram, dtype=np.float64)
    if histogram.size > 1:
        # The first bin holds the exact zeros (ReLU outputs: often half the tensor). Left as is, the
        # spike, smeared over its quantization level, outweighs every clipping error and drives the
        # threshold to the smallest candidate; TensorRT's calibrators level it with its neighbour.
        histogram[0] = histogram[1]
    nonzero = np.flatnonzero(histogram)
    if nonzero.size == 0:
        return histogram.size
    last = int(nonzero[-1]) + 1
    if last <= levels:
        return last
    suffix = np.cumsum(histogram[::-1])[::-1]          # suffix[i] = mass at or beyond bin i
    stride = -(-last // candidates)
    best, best_kl = last, np.inf
    for stop in [*range(levels, last, stride), last]:
        p = histogram[:stop].copy()
        if stop < histogram.size:
            p[-1] += suffix[stop]
        edges = (np.arange(levels + 1) * stop) // levels  # `levels` groups of (almost) equal width
        kept = histogram[:stop] > 0
        level_mass = np.add.reduceat(histogram[:stop], edges[:-1])
        level_bins = np.add.reduceat(kept.astype(np.float64), edges[:-1])
        spread = np.divide(level_mass, level_bins, out=np.zeros_like(level_mass), where=level_bins > 0)
        q = np.repeat(spread, np.diff(edges)) * kept
        kl = _kl_divergence(p, q)
        if kl < best_kl:
            best, best_kl = stop, kl
    return best


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P || Q) of two unnormalised histograms; where P has mass and Q none (the outlier bin),
    Q gets a tiny share (TensorRT's smoothing), so clipping outliers is penalised, not infinite."""
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    support = p > 0
    q = np.where(support & (q == 0), 1e-4 * p[support].min(), q)
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


@dataclass
class ActivationStats:
    """Statistics of the tensors of one graph over the calibration set."""
    method: str
    tensors: dict[str, TensorStats] = field(default_factory=dict)
    images: int = 0

    def ranges(self, symmetric: bool) -> dict[str, tuple[float, float]]:
        return {name: stats.range(self.method, symmetric) for name, stats in self.tensors.items()}


def tensor_bytes_per_image(model, names: Iterable[str]) -> int:
    """Bytes of the named float tensors for one image (shape-inferred value_info; unknown and
    batch dimensions counted as 1)."""
    import onnx

    wanted = set(names)
    total = 0
    for info in list(model.graph.value_info) + list(model.graph.output):
        tensor = info.type.tensor_type
        if info.name not in wanted or tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        total += int(np.prod(dims, dtype=np.int64)) * (4 if tensor.elem_type == onnx.TensorProto.FLOAT else 2)
    return total


def calibration_step(bytes_per_image: int, requested: int = 0) -> int:
    """Images per calibration step: `requested`, else MAX_STEP capped so that one step's
    requested activations stay under STEP_BYTES (1 image at least)."""
    if requested:
        return requested
    return int(max(1, min(MAX_STEP, STEP_BYTES // max(bytes_per_image, 1))))


def collect_stats(fp32_path: Path | str, tensors: list[str], calibration, *, method: str, batch: int | None = None,
                  calib_batch: int = 0, seed: int = 0, progress=None) -> ActivationStats:
    """Run the calibration images through `fp32_path` on ONNX Runtime (CPU) and return running
    statistics of `tensors`. batch: the graph's static batch (None: dynamic; steps of
    `calib_batch` images, or as many as STEP_BYTES allows). progress(total) -> a tqdm-like bar."""
    import onnx

    from ..core.contract import INPUT_NAME
    from ..core.onnxruntime import make_session

    fp32_path = Path(fp32_path)
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(fp32_path), load_external_data=False)
    step = batch or calibration_step(tensor_bytes_per_image(model, tensors), calib_batch)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors if name not in present)
    # A graph with its weights in a .data file gets its extra outputs in a small file beside it
    # (the weights stay where they are, ONNX Runtime reads them); one with inline weights is
    # written whole to a temporary folder.
    beside = any(uses_external_data(t) for t in model.graph.initializer)
    with tempfile.TemporaryDirectory(prefix="mlic-calib-", dir=fp32_path.parent if beside else None) as tmp:
        augmented = (fp32_path.parent if beside else Path(tmp)) / f"{Path(tmp).name}.onnx"
        try:
            onnx.save(model, str(augmented))
            del model
            session = make_session(str(augmented), ["CPUExecutionProvider"])
        finally:
            augmented.unlink(missing_ok=True)
    count = len(calibration) if batch is None else (len(calibration) // step) * step
    if count == 0:
        from .errors import CalibrationError
        raise CalibrationError(f"need at least {step} calibration images for a batch-{step} graph, "
                               f"got {len(calibration)}")
    stats = ActivationStats(method, {name: TensorStats() for name in tensors})
    rng = np.random.default_rng(seed) if method == "entropy" else None
    bar = progress(count) if progress else None
    try:
        for images in calibration.batches(step, count):
            outputs = session.run(tensors, {INPUT_NAME: images})
            for name, values in zip(tensors, outputs):
                stats.tensors[name].update(values, len(images), rng)
            del outputs
            stats.images += len(images)
            if bar is not None:
                bar.update(len(images))
    finally:
        if bar is not None:
            bar.close()
    return stats


__all__ = ["ActivationStats", "TensorStats", "calibration_step", "collect_stats", "entropy_threshold",
           "tensor_bytes_per_image"]
