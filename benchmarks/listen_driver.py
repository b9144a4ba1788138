"""Stand-in for ``rtverify listen --input FILE --json`` while the CLI is not in this checkout.

Same work in the same order as the CLI's listen loop: load the model, build the voiceprint, open
the file, print ``{"event": "ready"}``, run :class:`~rtverify.core.pipeline.Verifier` (windows in
batches of 8, or one by one with ``--realtime``) and print every event as a JSON line, then a
``summary``. The benchmarks switch to the real CLI as soon as ``rtverify.cli`` exists.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.listen_driver")
    p.add_argument("--input", required=True)
    p.add_argument("--model")
    p.add_argument("--realtime", action="store_true")
    p.add_argument("--enroll", nargs="+", required=True, help="recordings of the enrolled voice")
    args = p.parse_args(argv)

    from rtverify.core.encoder import EncoderSession, l2_normalize
    from rtverify.core.pipeline import Verifier, embed_recording
    from rtverify.io.sources import FileSource

    session = EncoderSession(args.model)
    total = sum(embed_recording(session, FileSource(f)).vector for f in args.enroll)
    voices = {"bench": l2_normalize(total)}
    source = FileSource(args.input, realtime=args.realtime)
    verifier = Verifier(session, voices, max_pending=1 if args.realtime else 8)
    out = sys.stdout
    out.write(json.dumps({"event": "ready", "source": args.input, "model_id": session.model_id,
                          "realtime": args.realtime}) + "\n")
    out.flush()
    n = 0
    for event in verifier.process(source):
        d = event.to_dict()
        d.pop("embedding", None)
        d.pop("window_sum", None)
        out.write(json.dumps(d) + "\n")
        out.flush()
        n += event.kind == "decision"
    out.write(json.dumps({"event": "summary", "decisions": n}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
