"""python -m export: write rtverify/models/<name>.onnx and its sidecar.

    python -m export --from-resemblyzer --name default
    python -m export --checkpoint runs/ge2e/last.pt --name finetuned
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtverify.config import FeatureConfig, WindowConfig
from rtverify.core.encoder import MODELS_DIR
from training.cli import read_json, user_errors

from .onnx_export import DEFAULT_PARITY_AUDIO, ParityError, write_model


def _with_level(model, level_dbfs: float | None, two_sided: bool):
    """The same weights under another in-graph level normalisation (None/False: keep the
    model's own target/ceiling)."""
    from training.model import level_power

    target = model.cfg.level_target if level_dbfs is None else level_power(level_dbfs)
    return model.with_level(target, target if two_sided else model.cfg.level_ceiling).eval()


@user_errors("export")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-resemblyzer", action="store_true",
                     help="export the pretrained GE2E encoder from the resemblyzer package as is")
    src.add_argument("--checkpoint", type=Path, help="a training checkpoint (training/train.py)")
    ap.add_argument("--name", default="default", help="model file stem (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help="directory (default: the package's)")
    ap.add_argument("--audio", type=Path, nargs="+", default=DEFAULT_PARITY_AUDIO,
                    help="real recordings to check torch against onnxruntime on")
    ap.add_argument("--decision", type=Path,
                    help="JSON with the calibrated decision block (threshold, "
                         "thresholds_by_speech_s, min_speech_s); see training/calibrate.py")
    ap.add_argument("--extra", type=Path, help="JSON merged into the sidecar (eval figures, data)")
    ap.add_argument("--level-dbfs", type=float,
                    help="override the level windows are normalised to inside the graph (dBFS; "
                         "default: the model's own, -30 for resemblyzer)")
    ap.add_argument("--level-two-sided", action="store_true",
                    help="also lower louder windows to the level, so the embedding does not "
                         "depend on loudness (default: the model's own setting)")
    ap.add_argument("--quantize", action="store_true",
                    help="ship <name>.onnx with LSTM layers 2-3 in int8 (about 2x faster on the "
                         "CPU), checked against the float32 export, which is kept as <name>-fp32.onnx")
    args = ap.parse_args(argv)

    features = FeatureConfig()
    window = WindowConfig()
    extra: dict = {}
    if args.from_resemblyzer:
        from training.transfer import ATTRIBUTION, load_resemblyzer

        model = load_resemblyzer()
        extra["training"] = {"objective": "GE2E (pretrained, not fine-tuned)",
                             "data": "as published by resemblyzer (LibriSpeech, VoxCeleb 1 and 2)"}
        extra["attribution"] = ATTRIBUTION
        extra["encoder"] = model.cfg.to_dict()
    else:
        from training.checkpoint import load_for_export

        model, meta = load_for_export(args.checkpoint)
        extra.update(meta)
        features = FeatureConfig.from_dict(meta.get("features", features.to_dict()))
    if args.level_dbfs is not None or args.level_two_sided:
        model = _with_level(model, args.level_dbfs, args.level_two_sided)
        extra["encoder"] = model.cfg.to_dict()
    decision = {"threshold": 0.75, "min_speech_s": 0.5}
    if args.decision:
        decision = read_json(args.decision, "--decision")
    if args.extra:
        extra.update(read_json(args.extra, "--extra"))
    try:
        path, sidecar = write_model(model, args.out, args.name, features=features, window=window,
                                    decision=decision, extra=extra, audio_files=list(args.audio),
                                    quantize=args.quantize)
    except ParityError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({sidecar['model_id']}); torch vs onnxruntime (float32) max |diff| "
          f"{sidecar['export_parity']['max_abs_diff']:.2e}")
    if "quantization" in sidecar:
        q = sidecar["quantization"]
        print(f"int8 vs float32 ({q['fp32_model']}): min cosine {q['min_cosine_vs_fp32']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
