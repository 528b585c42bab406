"""Serving with NVIDIA Triton Inference Server.

* `server`: `mlic-edge serve MODEL`: Triton through PyTriton (the `serve` extra), running our own
  runtime (ONNX Runtime, TensorRT, torch) inside it, with Triton's dynamic batcher.
* `repository`: `mlic-edge export-triton MODEL`: a model repository for NVIDIA's Triton
  containers (the model on its native backend + Python-backend pre/postprocessing + an ensemble).

The client is `mlic_edge.runtime.remote` (torch-free, like the rest of the runtime). Nothing here
is imported by `mlic_edge.runtime`; PyTriton is imported when a server starts.
"""
