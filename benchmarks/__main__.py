"""``python -m benchmarks run|events|long-recording`` (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CACHE, DATA


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("events", help="dump pipeline events / compare with an earlier dump")
    e.add_argument("--input", type=Path, help="recording (default: the demo conversation)")
    e.add_argument("--out", type=Path, help="write the dump here")
    e.add_argument("--compare", type=Path, help="compare with this earlier dump (exit 1 if not same)")
    e.add_argument("--tol", type=float, default=1e-5, help="score tolerance (default 1e-5)")

    lr = sub.add_parser("long-recording", help="build the long recording, print its path")
    lr.add_argument("--data", type=Path, default=DATA)
    lr.add_argument("--minutes", type=float)

    args = p.parse_args(argv)
    if args.cmd == "events":
        from . import events

        return events.main(args)
    if args.cmd == "long-recording":
        from .audio import build_long_recording

        print(build_long_recording(args.data, CACHE, args.minutes))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
