"""Write the non-reported Arabic dev list used to choose settings (README, "Model card").

    python -m tools.make_dev_trials --root ../shared/data --out runs/trials/arabic-train18-1s.txt

5000 same-speaker and 5000 different-speaker pairs of 1 s keyword clips of the 18 Arabic Speech
Commands ``train`` speakers (no reported list uses them), drawn with a fixed seed, in the format of
``../shared/data/trials/*.txt`` (paths relative to the data root).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make(root: Path, seed: int = 123, n_each: int = 5000) -> list[str]:
    corpus = root / "arabic-speech-commands"
    rows = [line.split() for line in (corpus / "SPLITS.tsv").read_text().splitlines()[1:]]
    train = sorted(s for s, split in rows if split == "train")
    files = {s: sorted(f"arabic-speech-commands/{s}/{p.name}" for p in (corpus / s).glob("*.flac"))
             for s in train}
    rng = np.random.default_rng(seed)
    lines: set[str] = set()
    while len(lines) < n_each:
        s = rng.choice(train)
        a, b = rng.choice(files[s], 2, replace=False)
        lines.add(f"1 {a} {b}")
    while len(lines) < 2 * n_each:
        s, t = rng.choice(train, 2, replace=False)
        lines.add(f"0 {rng.choice(files[s])} {rng.choice(files[t])}")
    return sorted(lines, reverse=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/trials/arabic-train18-1s.txt"))
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(make(args.root)) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
