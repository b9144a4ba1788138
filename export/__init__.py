"""Export of trained encoders to ONNX with a sidecar, checked against torch on real audio."""
