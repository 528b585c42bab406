"""Activation ranges for INT8, measured on ONNX Runtime one calibration batch at a time.

The fp32 graph gets the tensors to quantize as extra outputs, which ONNX Runtime writes into
buffers allocated once (IOBinding). Each step is reduced at once to running statistics, so memory
is one step's activations whatever the number of images:

* exact running min and max of every tensor (all elements);
* for the entropy method, a histogram of |x| with NUM_BINS bins over [0, R], R a power of two
  (bins stay aligned when a later batch widens the range: R doubles and pairs of bins merge,
  exactly). It is filled from SAMPLE_PER_IMAGE fixed positions of each image (drawn once per
  image size, uniformly without replacement, with a fixed seed; every element of a smaller
  image): an unbiased sample of the bulk, while the exact maximum sets the range. The positions
  do not depend on the batch, so the statistics are the same bit for bit however the images are
  batched.

Measured on ResNet101 @448 (113 tensors, 230 MB per image, 2 cores), per image over the 0.45 s
of inference: returning the tensors as new arrays +0.09 s (allocation, page faults, copy; +0.02
to 0.05 s into the bound buffers: ONNX Runtime still converts them from its blocked layout); min
and max 0.013 s; a 65536-element sample and its histogram 0.05 s, 16384 elements 0.015 s.
Reducing inside the graph (ReduceMin / ReduceMax / Gather nodes) was slower than all of these
together (+0.17 s), and a full histogram of every activation costs more than the inference.

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
SAMPLE_PER_IMAGE = 1 << 14  # histogram elements per image and tensor, at most
STEP_BYTES = 1024 ** 3     # activations of the calibrated tensors per calibration step, at most
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

    def observe(self, values: np.ndarray, positions: np.ndarray | None = None, histogram: bool = True) -> None:
        """Fold in a batch of values (batch first): min, max, count, and |x| at `positions` of
        each image (None: every element) when `histogram`."""
        flat = values.reshape(len(values), -1)
        self.minimum = min(self.minimum, float(flat.min()))
        self.maximum = max(self.maximum, float(flat.max()))
        self.count += flat.size
        if histogram:
            sample = flat if positions is None else flat[:, positions]
            self._add_to_histogram(np.abs(sample).reshape(-1), self.amax)

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
    histogram clipped there (outliers folded into its last bin) and Q is the kept bins without the
    outliers, quantized to `levels` levels (each level's mass spread over its non-empty bins).
    Where P has mass and Q none (an empty last bin taking the outliers), Q gets 1e-4 x the smallest
    P (TensorRT's smoothing), so clipping outliers is penalised, not infinite. Bins past the last
    non-empty one are never better than it, so the search stops there; clip points are tried
    every ceil(last / candidates) bins, TensorRT's resolution (2048 bins up to the maximum).

    All candidates at once from prefix sums, O(candidates x levels): with T the total mass and S
    the kept mass, KL = (sum p log p - sum p log q) / T - log T + log S, where sum p log q over a
    level is its mass x log(its mass / its non-empty bins), instead of a loop over candidates, which
    is slow on a deep network's hundred-odd tensors; tests/test_int8_calibration.py checks this
    against such a loop."""
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
    stride = -(-last // candidates)
    stops = np.array([*range(levels, last, stride), last])                              # (C,)
    filled = histogram > 0
    # prefix sums over the bins below i (index i)
    mass_below = np.concatenate([[0.0], np.cumsum(histogram)])
    bins_below = np.concatenate([[0], np.cumsum(filled)])
    p_log_p_below = np.concatenate([[0.0], np.cumsum(histogram * np.log(np.where(filled, histogram, 1.0)))])
    smallest_below = np.concatenate([[np.inf], np.minimum.accumulate(np.where(filled, histogram, np.inf))])

    edges = (np.arange(levels + 1) * stops[:, None]) // levels                          # (C, L+1)
    level_mass = np.diff(mass_below[edges], axis=1)                                      # (C, L)
    level_q = np.where(level_mass > 0, level_mass / np.maximum(np.diff(bins_below[edges], axis=1), 1), 1.0)
    total, kept = mass_below[-1], mass_below[stops]                                      # T, (C,) S
    outliers = total - kept
    last_bin = histogram[stops - 1]
    p_last = last_bin + outliers                                                         # P's last bin
    has_last = p_last > 0
    p_log_p = p_log_p_below[stops - 1] + np.where(has_last, p_last * np.log(np.where(has_last, p_last, 1.0)), 0.0)
    smoothed_q = kept * 1e-4 * np.minimum(smallest_below[stops - 1], np.where(has_last, p_last, np.inf)) / total
    p_log_q = np.sum(level_mass * np.log(level_q), axis=1) + np.where(
        last_bin > 0, outliers * np.log(level_q[:, -1]),
        np.where(has_last, p_last * np.log(np.where(has_last, smoothed_q, 1.0)), 0.0))
    with np.errstate(divide="ignore"):
        kl = np.where(kept > 0, (p_log_p - p_log_q) / total - np.log(total) + np.log(np.maximum(kept, 1e-300)), np.inf)
    if not np.isfinite(kl).any():
        return last
    return int(stops[int(np.argmin(kl))])


@dataclass
class ActivationStats:
    """Statistics of the tensors of one graph over the calibration set."""
    method: str
    tensors: dict[str, TensorStats] = field(default_factory=dict)
    images: int = 0

    def ranges(self, symmetric: bool) -> dict[str, tuple[float, float]]:
        return {name: stats.range(self.method, symmetric) for name, stats in self.tensors.items()}


def _float_shapes(model, names: Iterable[str]) -> dict[str, tuple[list[int], int]]:
    """Shape-inferred (dims, bytes per element) of the named float tensors; unknown and batch
    dimensions as 0."""
    import onnx

    wanted, shapes = set(names), {}
    for info in list(model.graph.value_info) + list(model.graph.output):
        tensor = info.type.tensor_type
        if info.name in wanted and tensor.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
            shapes[info.name] = (dims, 4 if tensor.elem_type == onnx.TensorProto.FLOAT else 2)
    return shapes


def _per_image(dims: list[int]) -> int | None:
    """Elements per image of a batch-first tensor; None when a non-batch dimension is unknown."""
    rest = dims[1:]
    return int(np.prod(rest, dtype=np.int64)) if rest and all(rest) else None


def tensor_bytes_per_image(model, names: Iterable[str]) -> int:
    """Bytes of the named float tensors for one image (shape-inferred value_info; unknown and
    batch dimensions counted as 1)."""
    return sum(int(np.prod([d or 1 for d in dims], dtype=np.int64)) * size
               for dims, size in _float_shapes(model, names).values())


def calibration_step(bytes_per_image: int, requested: int = 0) -> int:
    """Images per calibration step: `requested`, else MAX_STEP capped so that one step's
    calibrated activations stay under STEP_BYTES (1 image at least)."""
    if requested:
        return requested
    return int(max(1, min(MAX_STEP, STEP_BYTES // max(bytes_per_image, 1))))


def sample_positions(per_image: int, seed: int) -> np.ndarray | None:
    """SAMPLE_PER_IMAGE element positions of one image, sorted (None: fewer elements, take all)."""
    if per_image <= SAMPLE_PER_IMAGE:
        return None
    return np.sort(np.random.default_rng(seed).choice(per_image, SAMPLE_PER_IMAGE, replace=False))


def _augmented_session(fp32_path: Path, tensors: list[str]):
    """(ONNX Runtime CPU session of `fp32_path` with `tensors` as extra outputs, the graph's
    shape-inferred float shapes, bytes of `tensors` per image)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    from ..core.onnxruntime import make_session

    model = onnx.load(str(fp32_path), load_external_data=False)
    shapes = _float_shapes(model, tensors)
    per_image = tensor_bytes_per_image(model, tensors)
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
    return session, shapes, per_image


class _BoundOutputs:
    """The calibrated tensors of one session, written by ONNX Runtime into buffers allocated once:
    no allocation, page faults or copy per step. Tensors of unknown shape are allocated by ONNX
    Runtime."""

    def __init__(self, session, tensors: list[str], shapes: dict, step: int):
        self.session, self.tensors = session, tensors
        self.buffers = {name: np.empty([step, *shapes[name][0][1:]], np.float32) for name in tensors
                        if name in shapes and shapes[name][1] == 4 and _per_image(shapes[name][0])}
        self.binding = session.io_binding()
        self.views: dict[str, np.ndarray] = {}     # the rows of `buffers` bound for this step's size
        self.bound_rows = 0

    def _bind(self, rows: int) -> None:
        self.bound_rows = rows
        self.views = {name: buffer[:rows] for name, buffer in self.buffers.items()}  # first rows: contiguous
        for name in self.tensors:
            if name in self.views:
                self.binding.bind_output(name, "cpu", 0, np.float32, list(self.views[name].shape),
                                         self.views[name].ctypes.data)
            else:
                self.binding.bind_output(name, "cpu")

    def run(self, images: np.ndarray) -> Iterable[tuple[str, np.ndarray]]:
        """(name, values) of every calibrated tensor for one step of images."""
        from ..core.contract import INPUT_NAME

        self.binding.bind_cpu_input(INPUT_NAME, images)
        if len(images) != self.bound_rows:             # the first step, or a shorter last one
            self._bind(len(images))
        self.session.run_with_iobinding(self.binding)
        allocated = self.binding.get_outputs() if len(self.views) < len(self.tensors) else None
        for index, name in enumerate(self.tensors):
            yield name, self.views[name] if name in self.views else allocated[index].numpy()


def collect_stats(fp32_path: Path | str, tensors: list[str], calibration, *, method: str, batch: int | None = None,
                  calib_batch: int = 0, seed: int = 0, progress=None) -> ActivationStats:
    """Run the calibration images through `fp32_path` on ONNX Runtime (CPU), `tensors` as extra
    outputs written into buffers allocated once (IOBinding), and return their running statistics.
    batch: the graph's static batch (None: dynamic; steps of `calib_batch` images, or as many as
    STEP_BYTES allows). progress(total) -> a tqdm-like bar."""
    session, shapes, bytes_per_image = _augmented_session(Path(fp32_path), tensors)
    step = batch or calibration_step(bytes_per_image, calib_batch)
    count = len(calibration) if batch is None else (len(calibration) // step) * step
    if count == 0:
        from ..core.errors import CalibrationError
        raise CalibrationError(f"need at least {step} calibration images for a batch-{step} graph, "
                               f"got {len(calibration)}")
    outputs = _BoundOutputs(session, tensors, shapes, step)
    stats = ActivationStats(method, {name: TensorStats() for name in tensors})
    positions: dict[int, np.ndarray | None] = {}   # per image size: the histogram's sample
    histogram = method == "entropy"
    bar = progress(count) if progress else None
    try:
        for images in calibration.batches(step, count):
            images = np.ascontiguousarray(images, np.float32)
            for name, values in outputs.run(images):
                per_image = values.size // max(len(images), 1)
                if histogram and per_image not in positions:
                    positions[per_image] = sample_positions(per_image, seed)
                stats.tensors[name].observe(values, positions.get(per_image), histogram)
            stats.images += len(images)
            if bar is not None:
                bar.update(len(images))
    finally:
        if bar is not None:
            bar.close()
    return stats


__all__ = ["ActivationStats", "TensorStats", "calibration_step", "collect_stats",
           "entropy_threshold", "sample_positions", "tensor_bytes_per_image"]
