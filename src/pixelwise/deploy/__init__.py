"""Deployment: the ONNX contract (:mod:`.contract`, shared by the exporter and the ONNX engine) and the
exporter (:mod:`.onnx_export`)."""
