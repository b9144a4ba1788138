"""Transfer learning: the pretrained GE2E LSTM encoder that ships inside the ``resemblyzer`` wheel
(Apache-2.0; Jemine, "Real-Time Voice Cloning", 2019, after Wan et al., "Generalized End-to-End
Loss for Speaker Verification", ICASSP 2018), loaded into our :class:`SpeakerEncoder`.

Only training and export import this module; the runtime never does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import EncoderConfig, SpeakerEncoder

ATTRIBUTION = ("Initial weights: the pretrained GE2E speaker encoder shipped in the resemblyzer "
               "package (https://github.com/resemble-ai/Resemblyzer, Apache-2.0), 3 LSTM layers "
               "of 256 units with a 256-unit projection over 40 mel bands.")


def resemblyzer_weights_path() -> Path:
    """Where the installed resemblyzer package keeps ``pretrained.pt``."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("resemblyzer is not installed: pip install --no-deps resemblyzer "
                           "(see README, 'Training')")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise RuntimeError(f"{path}: resemblyzer's pretrained weights are missing")
    return path


def load_resemblyzer(path: Path | None = None, input_transform: str = "level") -> SpeakerEncoder:
    """Our encoder with Resemblyzer's weights, every tensor checked (strict loading).

    ``input_transform="level"`` (the runtime's) normalises each window's level inside the model;
    ``"none"`` reproduces Resemblyzer exactly on audio it has already volume-normalised.

    The checkpoint also holds GE2E's similarity scale and bias, which belong to the loss, not the
    encoder; they are returned separately by :func:`resemblyzer_ge2e_scale`.
    """
    state = torch.load(path or resemblyzer_weights_path(), map_location="cpu", weights_only=True)
    weights = {k: v for k, v in state["model_state"].items() if not k.startswith("similarity_")}
    model = SpeakerEncoder(EncoderConfig(input_transform=input_transform))
    model.load_state_dict(weights, strict=True)
    return model.eval()


def resemblyzer_ge2e_scale(path: Path | None = None) -> tuple[float, float]:
    """GE2E similarity weight and bias of the pretrained checkpoint (to resume the loss)."""
    state = torch.load(path or resemblyzer_weights_path(), map_location="cpu", weights_only=True)
    ms = state["model_state"]
    return float(ms["similarity_weight"]), float(ms["similarity_bias"])
