"""Training and evaluation: trainer (AdamW + one-cycle, AMP, EMA, DDP, exact resume) and eval.
The library's entry points are in `api` (train, evaluate; cheap to import). Calling this package,
`mlic_edge.train(...)`, runs `api.train(...)`; `evaluate` is not re-exported here, since it is
also this package's submodule, whose import would replace it."""
from __future__ import annotations

from ..core.callable_module import make_callable

make_callable(__name__, "mlic_edge.train.api:train")
