"""python -m export: write rtverify/models/<name>.onnx and its sidecar.

    python -m export --from-resemblyzer --name default
    python -m export --checkpoint runs/ge2e/last.pt --name finetuned
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rtverify.config import FeatureConfig, WindowConfig
from rtverify.encoder import MODELS_DIR

from .onnx_export import DEFAULT_PARITY_AUDIO, ParityError, write_model


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
    decision = {"threshold": 0.75, "min_speech_s": 0.5}
    if args.decision:
        decision = json.loads(args.decision.read_text())
    if args.extra:
        extra.update(json.loads(args.extra.read_text()))
    try:
        path, sidecar = write_model(model, args.out, args.name, features=features, window=window,
                                    decision=decision, extra=extra, audio_files=list(args.audio))
    except ParityError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({sidecar['model_id']}); torch vs onnxruntime max |diff| "
          f"{sidecar['export_parity']['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
