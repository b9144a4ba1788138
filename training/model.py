"""The LSTM speaker encoder (PyTorch) that is exported to ONNX for the runtime.

Input: spectrogram rows from :mod:`rtverify.core.features` (linear mel power by default), shape
``(batch, time, n_mels)``. Output: L2-normalised embeddings ``(batch, proj)``.

The input transform is part of the model, so the exported graph carries it and the runtime feeds
plain front-end rows:

* ``"level"``: per window, scale the mel power so that its mean over the non-silent rows reaches
  ``level_target`` if it is below (never turn a loud window down). With the default front-end the
  mean mel power is 9.95 times the waveform's mean square (Hann window, Slaney-normalised
  filters), so the default target matches Resemblyzer's "normalise to -30 dBFS, increase only".
* ``"log"``: ``log(mel + 1e-6)``, for models trained from scratch.
* ``"logcmn"``: ``log(mel + 1e-6)`` with each band's mean over the window's non-silent rows
  subtracted (cepstral-style mean normalisation, which removes the channel's fixed colouring);
  all-zero rows (the padding of a short segment) stay zero.
* ``"none"``: rows as they are (Resemblyzer's own setting, where the waveform was normalised
  before the front-end).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

MEL_POWER_PER_MEAN_SQUARE = 9.9487
"""Mean mel power / waveform mean square for speech with the default front-end (measured on the
Arabic Speech Commands train speakers; interquartile range 9.86..10.00)."""


def level_power(dbfs: float) -> float:
    """Mean mel power of speech at ``dbfs`` (dB relative to full scale): the unit of
    ``level_target`` and ``level_ceiling``."""
    return MEL_POWER_PER_MEAN_SQUARE * 10 ** (dbfs / 10)


LEVEL_TARGET = level_power(-30)
"""Mean mel power of speech at -30 dBFS, Resemblyzer's volume normalisation target."""


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = 40
    """Input bands per row."""
    hidden: int = 256
    """LSTM hidden units per layer."""
    layers: int = 3
    """Stacked LSTM layers."""
    proj: int = 256
    """Embedding size (dense projection of the last layer's final hidden state)."""
    relu: bool = True
    """ReLU after the projection (as the GE2E encoder of Resemblyzer)."""
    input_transform: str = "level"
    """``"level"`` (increase-only level normalisation of mel power), ``"log"``, ``"logcmn"`` or
    ``"none"``."""
    level_target: float = LEVEL_TARGET
    """Mean mel power a quieter window is raised to (``"level"`` only)."""
    level_ceiling: float | None = None
    """Mean mel power a louder window is lowered to (``"level"`` only; None: never lowered)."""
    reverse_time: bool = False
    """Read each window last row first. The runtime pads a segment shorter than a window with
    zero rows at the end; an LSTM read forwards then ends on those zeros and, unless trained to
    hold its state through them, forgets the speech (a freshly initialised one collapses every
    short window onto one embedding). Read backwards, the padding comes first and the speech
    last. Models trained from scratch use this; the pretrained encoder reads forwards."""
    mask_channels: int = 0
    """A learned spectral mask in front of the LSTM (0: none): a small convolution over
    ``mask_kernel`` rows of the window's log rows gives each band of each row a gain in
    (0, 2), exactly 1 at initialisation (its last layer starts at zero). Trained by
    :mod:`training.distill` ``--mask`` with the LSTM frozen, it can only re-weight what the
    encoder hears (suppress babble or a room's tail), not change how it tells voices apart."""
    mask_kernel: int = 9
    """Rows the mask's first convolution sees (centred; the window is whole when embedded)."""

    def to_dict(self) -> dict:
        return asdict(self)


class SpeakerEncoder(nn.Module):
    """LSTM layers -> dense projection of the final hidden state -> (ReLU) -> L2 normalisation."""

    def __init__(self, cfg: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        if cfg.level_ceiling is not None and not cfg.level_ceiling >= cfg.level_target:
            raise ValueError(f"level_ceiling ({cfg.level_ceiling}) must be at least level_target "
                             f"({cfg.level_target})")
        if cfg.input_transform not in ("level", "log", "logcmn", "none"):
            raise ValueError("input_transform must be 'level', 'log', 'logcmn' or 'none', got "
                             f"{cfg.input_transform!r}")
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden, cfg.layers, batch_first=True)
        self.linear = nn.Linear(cfg.hidden, cfg.proj)
        if cfg.mask_channels > 0:
            k = cfg.mask_kernel
            self.mask = nn.Sequential(
                nn.Conv1d(cfg.n_mels, cfg.mask_channels, k, padding=k // 2), nn.ReLU(),
                nn.Conv1d(cfg.mask_channels, cfg.n_mels, 1))
            nn.init.zeros_(self.mask[2].weight)
            nn.init.zeros_(self.mask[2].bias)

    def with_level(self, target: float, ceiling: float | None) -> "SpeakerEncoder":
        """A copy with the same weights under another level normalisation (``"level"`` input):
        windows raised to mean mel power ``target``, and lowered to ``ceiling`` (None: never)."""
        import dataclasses

        out = SpeakerEncoder(dataclasses.replace(self.cfg, level_target=target,
                                                 level_ceiling=ceiling))
        out.load_state_dict(self.state_dict(), strict=True)
        return out.train(self.training)

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        if self.cfg.input_transform == "log":
            return torch.log(frames + 1e-6)
        if self.cfg.input_transform == "none":
            return frames
        if self.cfg.input_transform == "logcmn":
            active = (frames.sum(dim=2, keepdim=True) > 0).to(frames.dtype)  # (B, T, 1)
            logs = torch.log(frames + 1e-6) * active
            mean = logs.sum(dim=1, keepdim=True) / active.sum(dim=1, keepdim=True).clamp_min(1.0)
            return (logs - mean) * active
        row_power = frames.mean(dim=2)  # (B, T)
        active = (row_power > 0).to(frames.dtype)  # zero rows are padding
        mean_power = (row_power * active).sum(dim=1) / active.sum(dim=1).clamp_min(1.0)
        mean_power = mean_power.clamp_min(1e-10)
        gain = (self.cfg.level_target / mean_power).clamp_min(1.0)
        if self.cfg.level_ceiling is not None:
            gain = torch.minimum(gain, self.cfg.level_ceiling / mean_power)
        return frames * gain[:, None, None]

    def raw_embedding(self, frames: torch.Tensor) -> torch.Tensor:
        """Projection before normalisation, ``(batch, proj)``."""
        x = self.transform(frames)
        if self.cfg.mask_channels > 0:
            logs = torch.log(x + 1e-6).transpose(1, 2) / 5.0  # (B, n_mels, T), about unit scale
            x = x * (2.0 * torch.sigmoid(self.mask(logs))).transpose(1, 2)
        if self.cfg.reverse_time:
            x = torch.flip(x, dims=[1])
        _, (hidden, _) = self.lstm(x)
        out = self.linear(hidden[-1])
        return torch.relu(out) if self.cfg.relu else out

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        raw = self.raw_embedding(frames)
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)
