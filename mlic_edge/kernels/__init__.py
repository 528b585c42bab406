"""The fused iRPE attention, written once for its three uses: the Triton kernels (training and the
TensorRT plugin's PTX, `irpe_triton`), the numpy reference op ONNX Runtime runs for plugin-mode
graphs (`irpe_reference`, which also states the node contract: input order, attributes), and the
TensorRT plugin (`irpe_plugin`). Nothing is imported until a module is asked for."""
