"""Training of rtverify's speaker encoders (PyTorch; the `train` extra). Never imported by the runtime."""
