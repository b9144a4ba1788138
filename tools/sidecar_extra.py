"""Compose the sidecar's measured sections for ``python -m export --extra``.

    python tools/sidecar_extra.py --calibration runs/calib/calibration.json \
        --eval runs/ev-LIST.json ... --out runs/extra.json

``--eval`` files are ``rtverify eval --json`` outputs named ``*-<list>.json``.
"""

import argparse
import json
from pathlib import Path

REFERENCE = {"librispeech-251-3s": (0.0199, 0.129), "arabic-test-1s": (0.1232, 0.901),
             "arabic-val-1s": (0.0910, 0.986), "fsdd-8k": (0.2108, 0.990)}
KEYS = ("eer", "min_dcf", "accuracy_at_eer", "accuracy_at_model_threshold", "trials",
        "files_without_speech", "files_short_speech_only")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=Path, required=True)
    ap.add_argument("--eval", type=Path, nargs="*", default=[])
    ap.add_argument("--note", type=Path, help="JSON merged in as is (e.g. design notes)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    calib = json.loads(args.calibration.read_text())
    extra = {"calibration": calib.get("calibration", calib)}
    lists = {}
    for f in args.eval:
        r = json.loads(f.read_text())
        name = next(k for k in REFERENCE if f.stem.endswith(k))
        row = {k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in KEYS}
        row["reference_resemblyzer"] = dict(zip(("eer", "min_dcf"), REFERENCE[name]))
        lists[name] = row
    if lists:
        extra["dev_eval"] = {
            "command": "rtverify eval --trials ../shared/data/trials/LIST.txt "
                       "--root ../shared/data --json",
            "scoring": "cosine of pooled file embeddings through the runtime path (segmenter, "
                       "streaming features, windows of this sidecar)",
            "lists": lists}
    if args.note:
        extra.update(json.loads(args.note.read_text()))
    args.out.write_text(json.dumps(extra, indent=2) + "\n")


if __name__ == "__main__":
    main()
