"""From a trained run to a device: ONNX files (:mod:`.onnx_graph`) checked against PyTorch."""
