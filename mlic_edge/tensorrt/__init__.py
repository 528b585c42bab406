"""What TensorRT needs from mlic-edge, torch-free and in one place: the two runtimes and how they
differ (`runtimes`), the engine sidecar (`sidecar`), the ops TensorRT's ONNX parser takes
(`onnx_ops`) and the IRPEAttention plugin (`plugin`). Building an engine is a stage of `export`
(`export.engine`); running one is a backend of `runtime` (`runtime.tensorrt_backend`)."""
