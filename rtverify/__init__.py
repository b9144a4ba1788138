"""rtverify: real-time speaker verification (microphone -> VAD -> mel -> ONNX encoder -> decision)."""

__version__ = "0.1.0"
