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
from rtverify.core.encoder import SIDECAR_FORMAT, sidecar_path
from rtverify.core.features import mel_spectrogram
from rtverify.io.sources import FileSource

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


FIRST_LSTM = "/lstm/LSTM"
"""Node name of the first LSTM layer in the exported graph; it stays float32 when quantizing."""
MIN_QUANTIZED_COSINE = 0.998
"""Smallest allowed cosine between the int8 and float32 embeddings of a real-audio window."""


def quantize_int8(src: Path, dst: Path) -> dict:
    """Write ``src`` with LSTM layers 2 and 3 quantized to int8 (onnxruntime dynamic quantization,
    weights per output channel) to ``dst``; returns what was done.

    The first layer stays float: its input is raw mel power, whose range is far too wide for 8-bit
    activations (quantizing it ruins the embeddings: cosine ~0.3 to float32)."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    lstms = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "LSTM"]
    if FIRST_LSTM not in lstms:
        raise ParityError(f"{src}: no node {FIRST_LSTM!r} to keep in float (LSTM nodes: {lstms})")
    logging.disable(logging.WARNING)  # its advice to run shape pre-processing: not needed here
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=[FIRST_LSTM], op_types_to_quantize=["LSTM"])
    finally:
        logging.disable(logging.NOTSET)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "per_channel": True, "op_types": ["LSTM"], "excluded": [FIRST_LSTM],
            "quantized": [n for n in lstms if n != FIRST_LSTM]}


def check_quantized(fp32: Path, int8: Path, batches: list[np.ndarray],
                    min_cosine: float = MIN_QUANTIZED_COSINE) -> float:
    """Smallest cosine between the two models' embeddings of every real-audio window; raises
    ParityError below ``min_cosine``."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    worst = 1.0
    for frames in batches:
        x = {"frames": frames.astype(np.float32)}
        worst = min(worst, float((a.run(None, x)[0] * b.run(None, x)[0]).sum(axis=1).min()))
    if not worst >= min_cosine:
        raise ParityError(f"int8 and float32 embeddings differ: cosine {worst:.4f} "
                          f"(required >= {min_cosine})")
    return worst


def _sidecar(path: Path, name: str, model_id_stem: str, *, n_mels: int, dim: int,
             features: FeatureConfig, window: WindowConfig, decision: dict, extra: dict) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "format": SIDECAR_FORMAT,
        "name": name,
        "model_id": f"{model_id_stem}-{digest[:12]}",
        "sha256": digest,
        "input": {"name": "frames", "shape": ["batch", "time", n_mels], "dtype": "float32"},
        "output": {"name": "embedding", "shape": ["batch", dim], "dtype": "float32",
                   "l2_normalised": True},
        "opset": OPSET,
        "embedding_dim": dim,
        "features": features.to_dict(),
        "window": {k: getattr(window, k) for k in window.__dataclass_fields__},
        "decision": decision,
        **extra,
    }


def write_model(model: torch.nn.Module, out_dir: Path, name: str, *, features: FeatureConfig,
                window: WindowConfig, decision: dict, extra: dict, audio_files: list[Path],
                quantize: bool = False) -> tuple[Path, dict]:
    """Export, check parity, and only then move the files into place (a failed check leaves any
    existing model untouched).

    Without ``quantize``: ``<name>.onnx`` (float32) and ``<name>.json``. With it, the float32
    export (checked against torch) becomes ``<name>-fp32.onnx``, and ``<name>.onnx`` is its int8
    version (LSTM layers 2-3), checked against the float32 graph on the same real-audio windows.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.onnx"
    n_mels = features.n_mels
    dim = int(model(torch.rand(1, 20, n_mels)).shape[1])
    common = dict(n_mels=n_mels, dim=dim, features=features, window=window, decision=decision)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, n_mels)
        batches = parity_windows(audio_files, features, window)
        worst = check_parity(model, fp32, batches)
        parity = {"max_abs_diff": worst, "tolerance": PARITY_TOLERANCE,
                  "audio": [p.name for p in audio_files]}
        if not quantize:
            sidecar = _sidecar(fp32, name, name, extra={"export_parity": parity, **extra}, **common)
            moves = [(fp32, final, sidecar)]
        else:
            fp32_name = f"{name}-fp32"
            # measured figures belong to the model they were measured on: the shipped int8 one
            fp32_extra = {k: v for k, v in extra.items() if k != "dev_eval"}
            if "dev_eval" in extra:
                fp32_extra["dev_eval"] = {"measured_on": f"{name}.onnx (int8); see its sidecar"}
            fp32_side = _sidecar(fp32, fp32_name, fp32_name,
                                 extra={"export_parity": parity, **fp32_extra}, **common)
            int8 = Path(tmp) / "int8.onnx"
            done = quantize_int8(fp32, int8)
            cosine = check_quantized(fp32, int8, batches)
            quant = {**done, "min_cosine_vs_fp32": cosine, "required": MIN_QUANTIZED_COSINE,
                     "fp32_model": f"{fp32_name}.onnx", "fp32_model_id": fp32_side["model_id"],
                     "audio": parity["audio"]}
            sidecar = _sidecar(int8, name, name, extra={"export_parity": parity,
                                                         "quantization": quant, **extra}, **common)
            moves = [(fp32, out_dir / f"{fp32_name}.onnx", fp32_side), (int8, final, sidecar)]
        for src, dst, side in moves:
            tmp_json = src.with_suffix(".json")
            tmp_json.write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
            os.replace(src, dst)
            os.replace(tmp_json, sidecar_path(dst))
    return final, sidecar
