"""`Tagger`: tags from any model file in three lines, the one code path under `mlic-edge infer`.

    import mlic_edge
    with mlic_edge.load("best.fp16.engine") as tagger:          # or .onnx / .pt; device= like infer's
        preds = tagger.predict(["a.jpg", pil_image, hwc_uint8_array])
        preds[0].labels, preds[0].scores                         # ["dog", "person"], {"dog": 0.93, ...}
        for frame in tagger.stream("clip.mp4", every=5):         # video files, URLs, /dev/video0
            frame.frame, frame.time_s, frame.labels

What a tagger does for every input: decode (paths, PIL images, HWC uint8 RGB arrays, video
frames), the model's own preprocessing (from its metadata), batching, the model, the sigmoid and
the per-class thresholds. An input that cannot be read becomes a `Prediction` with `.error` set and
no labels; the others are unaffected. Decoding runs in threads ahead of the model (bounded), so
lazily given inputs (a generator over 100,000 files) are consumed at the model's pace.

Imports numpy only; the model's runtime (ONNX Runtime, TensorRT, torch) is imported by `load`.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core.errors import ConfigError, ModelFileError
from ..core.images import Decoded, batched, iter_decoded
from ..core.metadata import ModelMetadata
from ..core.preprocess import image_from_array, load_image, pil
from ..metrics import sigmoid
from .backend import open_backend
from .base import Backend
from .model import LoadedModel, Prediction, check_threshold


def _describe(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return f"<array {index}>" if isinstance(item, np.ndarray) else f"<image {index}>"


def check_options(batch_size: int, threshold: float | None) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    check_threshold(threshold)


class BaseTagger(ABC):
    """What every tagger shares, over the `LoadedModel` it labels with: classes, thresholds and
    preprocessing, the threshold of a call, `predict` over `iter_predict`, and its lifetime.
    `Tagger` runs the model here; `RemoteTagger` (remote.py) asks a Triton server."""

    def __init__(self, model: LoadedModel, *, batch_size: int = 8, workers: int = 2,
                 threshold: float | None = None):
        self.model = model                 # the options were checked by the subclass, before it opened anything
        self.batch_size, self.workers = batch_size, max(int(workers), 1)
        self.default_threshold = threshold

    # ---------------------------------------------------------------- facts
    @property
    def metadata(self) -> ModelMetadata:
        return self.model.metadata

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def thresholds(self) -> np.ndarray:
        """The model's per-class thresholds, (K,) float64."""
        return self.model.thresholds

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def limits(self, threshold: float | None = None) -> np.ndarray:
        """The (K,) thresholds a call uses: `threshold` for every class, else the default one,
        else the model's per-class thresholds."""
        return self.model.limits(self.default_threshold if threshold is None else threshold)

    # ---------------------------------------------------------------- images
    def predict(self, inputs: Any, threshold: float | None = None, *, batch_size: int | None = None,
                with_attention: bool = False) -> list[Prediction]:
        """Tags of every input, in order: a path, PIL image or HWC uint8 RGB array, or a list of
        them. Unreadable inputs give a Prediction with `.error` set (never an exception)."""
        if isinstance(inputs, (str, os.PathLike, np.ndarray)) or hasattr(inputs, "getpixel"):
            inputs = [inputs]
        return list(self.iter_predict(inputs, threshold, batch_size=batch_size, with_attention=with_attention))

    @abstractmethod
    def iter_predict(self, inputs: Iterable, threshold: float | None = None, *, batch_size: int | None = None,
                     with_attention: bool = False, keep_images: bool = False) -> Iterator[Prediction]:
        """The Predictions of `inputs` in input order, as they come (each kind of tagger its own way)."""

    # ---------------------------------------------------------------- video
    def stream(self, source: str | os.PathLike, *, every: int | None = None, fps: float | None = None,
               threshold: float | None = None, batch_size: int | None = None, retries: int = 5,
               on_error: Any = None) -> Iterator[Prediction]:
        """Tags of a video file, URL (rtsp://, http://, ...) or camera (/dev/video0), frame by
        frame as they are decoded: every frame, every N-th (`every`) or F per second of video time
        (`fps`). A generator with bounded memory (live sources too): decoding runs in a thread a
        few frames ahead. Broken frames and dropped streams are passed to `on_error(FrameError)`
        (default: ignored) and skipped; live sources are reopened up to `retries` times. The same
        sampling for every tagger; only how a batch of frames is tagged differs (a local model,
        or the frames sent to a server as images)."""
        from .video import Frame, iter_frames

        batch = batch_size or self.batch_size
        frames = iter_frames(source, every=every, fps=fps, retries=retries, queue_size=max(8, 2 * batch),
                             transform=self._frame_payload)
        pending: list[Frame] = []
        with frames:
            for item in frames:
                if not isinstance(item, Frame):
                    if on_error is not None:
                        on_error(item)
                    continue
                pending.append(item)
                # A live source yields frames at its own pace: run what is there when a batch is
                # full or nothing more is decoded yet, so tags are never held back waiting.
                if len(pending) >= batch or not frames.ready():
                    yield from self._run_frames(source, pending, threshold)
                    pending = []
            if pending:
                yield from self._run_frames(source, pending, threshold)

    def _run_frames(self, source: Any, frames: list, threshold: float | None) -> list[Prediction]:
        """Predictions of a batch of frames, each naming the source, its frame number and time."""
        predictions = self._frame_predictions(frames, threshold)
        for position, (prediction, f) in enumerate(zip(predictions, frames)):
            if prediction.error is not None:
                prediction.error = prediction.error.replace(_describe(f.image, position), f"frame {f.index}", 1)
            prediction.source, prediction.frame, prediction.time_s = str(source), f.index, float(f.time_s)
        return predictions

    def _frame_payload(self, image: np.ndarray) -> Any:
        """What the decode thread makes of a kept frame for `_frame_predictions`: nothing here (the
        frame goes as it is); a local model's preprocessed input in `Tagger`."""
        return None

    def _frame_predictions(self, frames: list, threshold: float | None) -> list[Prediction]:
        """A Prediction per frame, in order: the frames' images (HWC uint8 RGB) as inputs."""
        return list(self.iter_predict([f.image for f in frames], threshold, batch_size=len(frames)))

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Free what the tagger holds; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tagger(BaseTagger):
    """A model run here, with its classes, thresholds and preprocessing. Use `mlic_edge.load(...)`.

    batch_size: images per model call (engines with a fixed batch pad or split as needed);
    workers: decoding threads; threshold: one threshold for every class instead of the model's
    per-class ones (each call may override it). Backend options as for `open_backend`.
    """

    def __init__(self, model: str | os.PathLike | Backend, *, device: str = "auto", batch_size: int = 8,
                 workers: int = 2, threshold: float | None = None, **backend_options: Any):
        check_options(batch_size, threshold)          # before a runtime is opened
        self._owns_backend = not isinstance(model, Backend)
        self.backend: Backend | None = model if isinstance(model, Backend) else \
            open_backend(model, device=device, **backend_options)
        super().__init__(self.backend.loaded_model, batch_size=batch_size, workers=workers, threshold=threshold)

    # ---------------------------------------------------------------- facts
    @property
    def has_attention(self) -> bool:
        return self._live().has_attention

    def describe(self) -> dict[str, Any]:
        return self._live().describe()

    def _live(self) -> Backend:
        if self.backend is None:
            raise ConfigError("this tagger was closed")
        return self.backend

    # ---------------------------------------------------------------- images
    def iter_predict(self, inputs: Iterable, threshold: float | None = None, *, batch_size: int | None = None,
                     with_attention: bool = False, keep_images: bool = False) -> Iterator[Prediction]:
        """`predict` as a generator over a lazily consumed iterable: decoding runs a few batches
        ahead of the model, so memory holds those batches whatever the number of inputs."""
        batch = batch_size or self.batch_size
        decoded = iter_decoded(inputs, lambda item: self._decode(item, keep_images), workers=self.workers,
                               window=batch * 3)
        groups = batched(decoded, batch)
        # TensorRT's CUDA context and stream belong to the thread that opened the engine.
        runs = ((g, self._infer(g)) for g in groups) if self._live().kind == "tensorrt" else \
            _one_ahead(groups, self._infer)
        for group, outputs in runs:
            yield from self._predictions(group, outputs, threshold, with_attention)

    def _decode(self, item: Any, keep_image: bool) -> tuple[np.ndarray, Any]:
        """One input -> (float32 (3, S, S), the PIL image or None); one-line errors name the input."""
        if isinstance(item, (str, os.PathLike)):
            image = load_image(item, reduce_to=self.image_size)       # DatasetError names the file
        elif isinstance(item, np.ndarray):
            try:
                image = image_from_array(item)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        elif isinstance(item, pil().Image.Image):
            image = item
        else:
            raise ConfigError(f"expected a path, a PIL image or an HWC uint8 array, got {type(item).__name__}")
        return self.model.preprocessing(image), (image if keep_image else None)

    def _infer(self, group: list[Decoded]) -> dict[str, np.ndarray] | None:
        """The model on the decodable inputs of `group` (None when there are none)."""
        good = [one.value[0] for one in group if one.error is None]
        return self._live().predict(np.stack(good)) if good else None       # (n, 3, S, S) in

    def _predictions(self, group: list[Decoded], outputs: dict[str, np.ndarray] | None, threshold: float | None,
                     with_attention: bool) -> list[Prediction]:
        """A Prediction per input of `group`, in order, from the model's outputs on its good ones."""
        limits = self.limits(threshold)
        if outputs is not None:
            scores = sigmoid(outputs["logits"])                                        # (n, K)
            attention = outputs.get("attention") if with_attention else None           # (n, K, h, w)
            if with_attention and attention is None:
                raise ModelFileError(f"{self._live().path}: has no 'attention' output; export it with "
                                     f"`mlic-edge export --attention` (checkpoints always have it)")
            rows = iter(range(len(scores)))
        predictions = []
        for one in group:
            source = _describe(one.item, one.index)
            if one.error is not None:
                message = one.error if isinstance(one.item, (str, os.PathLike)) else f"{source}: {one.error}"
                predictions.append(Prediction(source, error=message))
                continue
            i = next(rows)
            prediction = self.model.scored(source, scores[i], limits)
            prediction.attention = attention[i] if attention is not None else None
            prediction.image = one.value[1]
            predictions.append(prediction)
        return predictions

    # ---------------------------------------------------------------- video
    def _frame_payload(self, image: np.ndarray) -> Any:
        """The model's input for a kept frame, computed in the decode thread ahead of the model."""
        return self.model.preprocessing(image_from_array(image))

    def _frame_predictions(self, frames: list, threshold: float | None) -> list[Prediction]:
        group = [Decoded(f.index, f, value=(f.payload, None)) for f in frames]
        return self._predictions(group, self._infer(group), threshold, False)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Free the runtime (sessions, engines, device memory); idempotent."""
        if self.backend is not None and self._owns_backend:
            self.backend.close()
        self.backend = None

    def __repr__(self) -> str:
        where = f"{self.backend.kind} on {self.backend.device}" if self.backend else "closed"
        return f"Tagger({len(self.classes)} classes, {self.image_size} px, {where})"


def _one_ahead(items: Iterator[Any], work: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
    """(item, work(item)) in order, `work` running in one thread an item ahead of the consumer:
    while the caller turns batch k into rows (Python, holding the GIL) and waits for batch k+2 to
    decode, the model runs batch k+1 (ONNX Runtime and torch release the GIL while they compute)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlic-model") as pool:
        waiting: tuple[Any, Future] | None = None
        for item in items:
            future = pool.submit(work, item)
            if waiting is not None:
                yield waiting[0], waiting[1].result()
            waiting = (item, future)
        if waiting is not None:
            yield waiting[0], waiting[1].result()


__all__ = ["BaseTagger", "Prediction", "Tagger"]
