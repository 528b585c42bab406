"""`load`: the tagger a model file or a server URL needs. A module of its own because both kinds
of tagger live below it (tagger.py runs a model here; remote.py asks a Triton server; both are
`BaseTagger`s over one `LoadedModel`), and the package root imports it only when `mlic_edge.load`
is called."""
from __future__ import annotations

import os
from typing import Any

from .remote import RemoteTagger, is_remote
from .tagger import BaseTagger, Tagger


def load(model: str | os.PathLike, device: str = "auto", **options: Any) -> BaseTagger:
    """A `Tagger` for a model file (.onnx, .engine/.plan/.trt, .pt). `device`: auto | cpu | cuda |
    cuda:N | tensorrt (ONNX Runtime's TensorRT provider). Options: batch_size, workers, threshold,
    and the backend's own (see `open_backend`). A server URL (http://host:8000/name,
    grpc://host:8001/name: `mlic-edge serve`) gives a `RemoteTagger` with the same `predict`."""
    if is_remote(model):
        return RemoteTagger(str(model), **options)
    return Tagger(model, device=device, **options)
