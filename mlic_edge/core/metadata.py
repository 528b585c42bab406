"""Metadata that travels inside every exported model file (no torch needed to read it).

ONNX: one `metadata_props` entry, key `mlic_edge`, value = this JSON. TensorRT engines: the same
JSON in a sidecar `<engine>.json` (plus TensorRT/GPU facts). The runtime needs nothing else to
preprocess images, name the outputs and threshold the scores.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .contract import INPUT_NAME
from .errors import ModelFileError

METADATA_KEY = "mlic_edge"
METADATA_FORMAT = "mlic-edge-model/1"


@dataclass
class ModelMetadata:
    classes: list[str]
    preprocess: dict[str, Any]          # image_size, resize ("squash"), mean, std, interpolation
    thresholds: list[float]             # per-class decision thresholds on sigmoid scores
    model_config: dict[str, Any]        # ModelConfig.to_dict()
    precision: str = "fp32"             # fp32 | fp16 | int8 (+ target, e.g. "int8-cpu")
    source_sha256: str = ""             # sha256 of the checkpoint the graph came from
    input_name: str = INPUT_NAME        # float32 (B, 3, S, S), normalised
    output_names: list[str] = field(default_factory=lambda: ["logits"])  # logits (B, K) [, attention (B, K, h, w)]
    format: str = METADATA_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def class_thresholds(self, source: str = "model"):
        """The per-class decision thresholds as a float64 (K,) array (0.5 each where the file has
        none); ModelFileError naming `source` when their count is not the classes'."""
        import numpy as np

        values = np.asarray(self.thresholds or [0.5] * len(self.classes), dtype=np.float64)
        if len(values) != len(self.classes):
            raise ModelFileError(f"{source}: {len(values)} thresholds for {len(self.classes)} classes")
        return values

    def preprocessing(self, source: str = "model"):
        """The typed, checked preprocessing spec; ModelFileError naming `source` when it is invalid."""
        from .preprocess import Preprocessing

        return Preprocessing.from_dict(self.preprocess, source, ModelFileError)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelMetadata":
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError) as e:
            raise ModelFileError(f"{source}: malformed mlic-edge metadata ({e})") from None
