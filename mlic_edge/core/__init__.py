"""The torch-free base every floor stands on: errors, file utilities (atomic writes, caches),
image loading and preprocessing, image sources, the model-file contract (I/O names, precisions,
suffix table, ONNX metadata and engine sidecars), ONNX Runtime sessions, GPU facts and the two
TensorRT runtimes. Needs numpy (and Pillow for images); nothing here imports torch."""
