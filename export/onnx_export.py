"""torch encoder -> ONNX file + JSON sidecar, verified in onnxruntime against torch on real audio."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from rtverify.config import FeatureConfig, WindowConfig
from rtverify.encoder import SIDECAR_FORMAT, sidecar_path
from rtverify.features import mel_spectrogram
from rtverify.sources import FileSource

OPSET = 17
PARITY_TOLERANCE = 1e-4
"""Largest allowed absolute difference between torch and onnxruntime embeddings."""
DEFAULT_PARITY_AUDIO = sorted((Path(__file__).resolve().parent.parent / "rtverify" / "demo")
                              .glob("*.flac"))
"""Real recordings the export is checked on (the bundled demo audio)."""


class ParityError(RuntimeError):
    pass


def export_onnx(model: torch.nn.Module, path: Path, n_mels: int) -> None:
    """Write ``model`` with input ``frames [batch, time, n_mels]`` and output
    ``embedding [batch, dim]``, batch and time dynamic."""
    model = model.eval()
    example = torch.rand(2, 160, n_mels) * 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about LSTM batch sizes; checked below
        torch.onnx.export(model, (example,), str(path), input_names=["frames"],
                          output_names=["embedding"],
                          dynamic_axes={"frames": {0: "batch", 1: "time"},
                                        "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """A whole recording as 16 kHz mono float32, through the runtime's own source."""
    return np.concatenate([c.samples for c in FileSource(path)])


def parity_windows(audio_files: Iterable[Path], features: FeatureConfig,
                   window: WindowConfig) -> list[np.ndarray]:
    """Real-audio test batches: full windows of each file, plus a short one (dynamic time)."""
    batches = []
    for f in audio_files:
        mel = mel_spectrogram(load_audio(f), features)
        w = window.window_frames
        if len(mel) >= w:
            starts = range(0, len(mel) - w + 1, window.hop_frames)
            batches.append(np.stack([mel[s:s + w] for s in starts]))
        batches.append(mel[None, : max(10, min(len(mel), w // 2))])
    if not batches:
        raise ParityError("no audio to check the export against")
    return batches


def check_parity(model: torch.nn.Module, onnx_path: Path, batches: list[np.ndarray],
                 tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest |torch - onnxruntime| over every embedding; raises ParityError above tolerance."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model = model.eval()
    for frames in batches:
        with torch.no_grad():
            ref = model(torch.from_numpy(frames)).numpy()
        (got,) = sess.run(["embedding"], {"frames": frames.astype(np.float32)})
        if got.shape != ref.shape:
            raise ParityError(f"onnxruntime gave shape {got.shape}, torch {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= tolerance:
        raise ParityError(f"onnxruntime and torch embeddings differ by {worst:.2e} "
                          f"(allowed {tolerance:.0e})")
    return worst


def write_model(model: torch.nn.Module, out_dir: Path, name: str, *, features: FeatureConfig,
                window: WindowConfig, decision: dict, extra: dict,
                audio_files: list[Path]) -> tuple[Path, dict]:
    """Export, check parity, and only then move ``<name>.onnx`` and ``<name>.json`` into place
    (a failed check leaves any existing model untouched)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_onnx = Path(tmp) / f"{name}.onnx"
        n_mels = features.n_mels
        export_onnx(model, tmp_onnx, n_mels)
        worst = check_parity(model, tmp_onnx, parity_windows(audio_files, features, window))
        digest = hashlib.sha256(tmp_onnx.read_bytes()).hexdigest()
        dim = int(model(torch.rand(1, 20, n_mels)).shape[1])
        sidecar = {
            "format": SIDECAR_FORMAT,
            "name": name,
            "model_id": f"{name}-{digest[:12]}",
            "sha256": digest,
            "input": {"name": "frames", "shape": ["batch", "time", n_mels], "dtype": "float32"},
            "output": {"name": "embedding", "shape": ["batch", dim], "dtype": "float32",
                       "l2_normalised": True},
            "opset": OPSET,
            "embedding_dim": dim,
            "features": features.to_dict(),
            "window": {k: getattr(window, k) for k in window.__dataclass_fields__},
            "decision": decision,
            "export_parity": {"max_abs_diff": worst, "tolerance": PARITY_TOLERANCE,
                              "audio": [p.name for p in audio_files]},
            **extra,
        }
        tmp_json = Path(tmp) / f"{name}.json"
        tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_onnx, final)
        os.replace(tmp_json, sidecar_path(final))
    return final, sidecar
