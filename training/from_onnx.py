"""The shipped default encoder's torch weights, read back from its float32 ONNX export.

The fine-tuning checkpoint the default was exported from is not kept, but ``default-short-fp32.onnx``
holds every weight: ONNX LSTM gates come in the order (input, output, forget, cell), PyTorch's in
(input, forget, cell, output), and ONNX's bias is ``[W_b; R_b]``. :func:`load_shipped_student`
rebuilds the :class:`~training.model.SpeakerEncoder` with the sidecar's ``encoder`` settings and
checks it against onnxruntime on real audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtverify.core.encoder import MODELS_DIR, load_model_info

from .model import EncoderConfig, SpeakerEncoder

DEFAULT_FP32 = MODELS_DIR / "default-short-fp32.onnx"


def _iofc_to_ifco(w: np.ndarray, hidden: int) -> np.ndarray:
    i, o, f, c = (w[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def load_shipped_student(path: Path = DEFAULT_FP32, check: bool = True) -> SpeakerEncoder:
    import onnx
    from onnx import numpy_helper

    info = load_model_info(path)
    enc = dict(info.raw["encoder"])
    cfg = EncoderConfig(**enc)
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    if len(lstms) != cfg.layers:
        raise ValueError(f"{path}: {len(lstms)} LSTM nodes, sidecar says {cfg.layers} layers")
    h = cfg.hidden
    state = {}
    for k, node in enumerate(lstms):
        w, r, b = (inits[node.input[j]][0] for j in (1, 2, 3))
        state[f"lstm.weight_ih_l{k}"] = _iofc_to_ifco(w, h)
        state[f"lstm.weight_hh_l{k}"] = _iofc_to_ifco(r, h)
        state[f"lstm.bias_ih_l{k}"] = _iofc_to_ifco(b[:4 * h], h)
        state[f"lstm.bias_hh_l{k}"] = _iofc_to_ifco(b[4 * h:], h)
    state["linear.weight"] = inits["linear.weight"]
    state["linear.bias"] = inits["linear.bias"]
    student = SpeakerEncoder(cfg)
    student.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                            strict=True)
    student.eval()
    if check:
        from export.onnx_export import DEFAULT_PARITY_AUDIO, check_parity, parity_windows

        check_parity(student, path, parity_windows(DEFAULT_PARITY_AUDIO, info.features,
                                                   info.window))
    return student
