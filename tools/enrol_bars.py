"""Measure a model's enrolment consistency bar (``EnrollSettings.consistency``) on LibriSpeech.

    .venv/bin/python -m tools.enrol_bars --data ../shared/data [--model campp]

Enrolment refuses a take (or names the odd recording, or the parts of a recording that sound
like another voice) whose cosine to the rest is below the bar. Cosines are each model's own
scale, so each model needs its own: this prints, on ``librispeech-251-3s`` (251 speakers; its
same-speaker pairs are two 3 s crops of one recording, its different-speaker pairs 10000
random ones), embedded as enrolment embeds a recording, how many same-speaker pairs fall below
each bar (takes of the speaker refused) and how many different-speaker pairs reach it (another
voice taken in), and the bar the model uses now (its sidecar's ``enrolment.consistency`` or the
default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--model", default=None, help="shipped model name or .onnx (default: the "
                                                  "default model)")
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    args = ap.parse_args(argv)

    from rtverify.apps.enroll import EnrollSettings
    from rtverify.core.encoder import EncoderSession
    from rtverify.evaluation import embed_files, read_trials

    t = read_trials(args.data / "trials" / "librispeech-251-3s.txt", args.data)
    session = EncoderSession(args.model, threads=1)
    v = embed_files(session, [args.data / f for f in t.files], cache_dir=args.cache).vectors
    ok = ~np.isnan(v[t.a, 0]) & ~np.isnan(v[t.b, 0])
    cos = np.sum(v[t.a] * v[t.b], axis=1)
    same, other = cos[ok & (t.labels == 1)], cos[ok & (t.labels == 0)]
    rows = {f"{bar:.2f}": {"same_refused": round(float(np.mean(same < bar)), 4),
                           "other_taken": round(float(np.mean(other >= bar)), 4)}
            for bar in np.arange(0.30, 0.801, 0.05)}
    now = EnrollSettings().for_model(session).consistency
    print(json.dumps({
        "model_id": session.model_id, "bar_now": now,
        "at_bar_now": {"same_refused": round(float(np.mean(same < now)), 4),
                       "other_taken": round(float(np.mean(other >= now)), 4)},
        "same": {f"p{q}": round(float(np.percentile(same, q)), 3) for q in (1, 5, 50)},
        "other": {f"p{q}": round(float(np.percentile(other, q)), 3) for q in (50, 95, 99)},
        "bars": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
