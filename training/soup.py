"""Average the students of several distillation checkpoints that start from the same weights
(a "model soup": Wortsman et al., ICML 2022), into a checkpoint ``training.distill --export``
reads.

    python -m training.soup --out runs/soupA runs/distill14/last.pt runs/distill15/last.pt
    python -m training.distill --out runs/soupA --export soupA --export-dir runs/soups

The student's tensors are averaged uniformly; the rest of the checkpoint (step, head,
settings) is the first one's, with the averaged files recorded under ``settings["soup"]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoint import load_distilled, write
from .cli import user_errors


def soup(checkpoints: list[Path]) -> dict:
    states = [load_distilled(c) for c in checkpoints]
    keys = set(states[0]["student"])
    for c, s in zip(checkpoints, states):
        if set(s["student"]) != keys:
            raise SystemExit(f"{c}: not the same student as {checkpoints[0]}")
    avg = {k: sum(s["student"][k].float() for s in states) / len(states)
           for k in states[0]["student"]}
    out = dict(states[0])
    out["student"] = avg
    out["settings"] = dict(out.get("settings", {}), soup=",".join(map(str, checkpoints)))
    return out


@user_errors("training.soup")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.soup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for last.pt")
    ap.add_argument("checkpoints", type=Path, nargs="+")
    args = ap.parse_args(argv)
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no such checkpoint")
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "last.pt", soup(args.checkpoints))
    print(f"{args.out / 'last.pt'}: the average of {len(args.checkpoints)} students")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
