"""Trial lists of 1 s English command words on speakers no model was trained on: the held-out
third of a Speech Commands folder (:func:`training.data.extra_split`; the other two thirds may
be distilled on with ``python -m training.distill --extra DIR``).

    .venv/bin/python -m tools.sc_trials --corpus DIR --out runs/sc
    .venv/bin/rtverify eval --trials runs/sc/sc-1s-vp3.txt --root DIR --json

Speech Commands (Warden, 2018; CC BY 4.0): one-second clips of single English words recorded by
volunteers on their own phones and computers, so many microphones and rooms. The team used the
v0.02 test files (4482 word clips of 239 speakers) kept in a public GitHub project
(``thegtagamer/PICO-tinyML-benchmark``, folder ``MLTK_keyworkSpotting/dataset``), laid out as
``<speaker>/<word>_<n>.wav`` with a ``MANIFEST.tsv``; nothing of it is in this repository.

Two lists, each speaker's clips in sorted order:

* ``sc-1s-vp3.txt``: the issue's shape, a 3-take voiceprint (the speaker's first three clips,
  joined with ``+``) against each of their other clips, and ``--different`` random
  (voiceprint of s, clip of t) pairs;
* ``sc-1s.txt``: one clip against one clip, every same-speaker pair and as many random
  different-speaker pairs.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

TAKES = 3


def build(corpus: Path, out: Path, different: int = 5000, seed: int = 5) -> dict[str, Path]:
    from training.data import extra_split, from_manifest

    held = set(extra_split(corpus)["held"])
    clips: dict[str, list[str]] = {}
    for u in from_manifest(corpus):
        if u.speaker in held:
            clips.setdefault(u.speaker, []).append(u.path.relative_to(corpus).as_posix())
    clips = {s: sorted(c) for s, c in sorted(clips.items()) if len(c) > TAKES}
    if len(clips) < 2:
        raise SystemExit(f"{corpus}: fewer than two held-out speakers with {TAKES + 1} clips")
    rng = np.random.default_rng(seed)
    owners = sorted(clips)
    out.mkdir(parents=True, exist_ok=True)
    vp = {s: "+".join(c[:TAKES]) for s, c in clips.items()}
    lines = {f"1 {vp[s]} {b}" for s, c in clips.items() for b in c[TAKES:]}
    n_clips = sum(len(c) for c in clips.values())
    n = len(lines) + min(different, sum(n_clips - len(c) for c in clips.values()))
    while len(lines) < n:
        s, t = rng.choice(owners, 2, replace=False)
        lines.add(f"0 {vp[s]} {rng.choice(clips[t])}")
    paths = {"sc-1s-vp3": out / "sc-1s-vp3.txt"}
    paths["sc-1s-vp3"].write_text("\n".join(sorted(lines, reverse=True)) + "\n")
    pairs = {f"1 {a} {b}" for c in clips.values() for a, b in itertools.combinations(c, 2)}
    n = len(pairs) + min(len(pairs), (n_clips ** 2 - sum(len(c) ** 2 for c in clips.values())) // 2)
    while len(pairs) < n:
        s, t = rng.choice(owners, 2, replace=False)
        pairs.add(f"0 {rng.choice(clips[s])} {rng.choice(clips[t])}")
    paths["sc-1s"] = out / "sc-1s.txt"
    paths["sc-1s"].write_text("\n".join(sorted(pairs, reverse=True)) + "\n")
    for name, p in paths.items():
        rows = p.read_text().splitlines()
        same = sum(r.startswith("1") for r in rows)
        print(f"{p}: {len(clips)} held-out speakers, {same} same / {len(rows) - same} different")
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True,
                    help="Speech Commands folder: <speaker>/<clip>.wav and MANIFEST.tsv")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--different", type=int, default=5000)
    args = ap.parse_args(argv)
    build(args.corpus, args.out, args.different)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
