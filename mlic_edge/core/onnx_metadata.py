"""Read and write the mlic-edge metadata of an ONNX file (no torch; only the `onnx` package).

The metadata is one `metadata_props` entry of the ModelProto, key `mlic_edge`, value the JSON of
`ModelMetadata`. Reading parses the protobuf without loading external weight files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ModelFileError, one_line
from .metadata import METADATA_KEY, ModelMetadata


def _load_proto(path: Path):
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        raise ModelFileError(f"{path}: reading ONNX metadata needs the `onnx` package") from None
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, truncated file, ...
        reason = one_line(e, 200)
        raise ModelFileError(f"{path}: not a readable ONNX file ({reason})") from None


def load_model_proto(onnx_path: str | os.PathLike):
    """The whole ModelProto (external weights included); one-line ModelFileError if unreadable."""
    path = Path(onnx_path)
    proto = _load_proto(path)
    try:
        import onnx
        from onnx.external_data_helper import load_external_data_for_model
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
            load_external_data_for_model(proto, str(path.parent))
    except Exception as e:
        raise ModelFileError(f"{path}: cannot read its external weights ({' '.join(str(e).split())[:160]})") from None
    return proto


def read_metadata(onnx_path: str | os.PathLike) -> ModelMetadata:
    """ModelMetadata stored in an exported ONNX file; one-line ModelFileError when absent/malformed."""
    path = Path(onnx_path)
    proto = _load_proto(path)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelMetadata.from_json(prop.value, source=str(path))
    raise ModelFileError(f"{path}: no mlic-edge metadata (key {METADATA_KEY!r}); "
                         f"was it exported with `mlic-edge export`?")


def set_metadata(model: Any, metadata: ModelMetadata) -> None:
    """Store `metadata` in an onnx.ModelProto in place (replacing an earlier mlic-edge entry)."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
