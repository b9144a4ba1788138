"""Trial lists of 1 s English command words on speakers no model was trained on: the held-out
third of a Speech Commands folder (:func:`training.data.extra_split`; the other two thirds may
be distilled on with ``python -m training.distill --extra DIR``).

    .venv/bin/python -m tools.sc_trials --layout SRC --corpus DIR --out runs/sc
    .venv/bin/python -m tools.sc_trials --corpus DIR --out runs/sc
    .venv/bin/rtverify eval --trials runs/sc/sc-1s-vp3.txt --root DIR --json

Speech Commands (Warden, 2018; CC BY 4.0): one-second clips of single English words recorded by
volunteers on their own phones and computers, so many microphones and rooms. The team used the
v0.02 test files (4482 word clips of 239 speakers) kept in a public GitHub project
(``thegtagamer/PICO-tinyML-benchmark``, folder ``MLTK_keyworkSpotting/dataset``); ``--layout
SRC`` lays such a folder (one folder per word, ``<speaker>_nohash_<n>.wav`` or, in
``_unknown_``, ``<word>_<speaker>_nohash_<n>.wav``; ``_silence_`` skipped) out under
``--corpus`` as ``<speaker>/<word>_<n>.wav`` with a ``MANIFEST.tsv``, by hard links where it can.
Nothing of it is in this repository.

Three lists, each speaker's clips in sorted order:

* ``sc-1s-vp3.txt``: the issue's shape, a 3-take voiceprint (the speaker's first three clips,
  joined with ``+``) against each of their other clips, and ``--different`` random
  (voiceprint of s, clip of t) pairs;
* ``sc-1s-vp8.txt``: the same with eight words in each voiceprint (speakers with nine clips or
  more): about 4 s of speech, a voiceprint ``enroll`` would make (it refuses the 3-word ones);
* ``sc-1s.txt``: one clip against one clip, every same-speaker pair and as many random
  different-speaker pairs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
from pathlib import Path

import numpy as np

TAKES = 3
ENROL_TAKES = 8
"""Words in the voiceprints of ``sc-1s-vp8``: about 4 s of speech, more than the 3 s ``enroll``
asks of recordings (three 1 s words hold about 1.5 s: ``enroll`` would refuse them)."""


CLIP = re.compile(r"^(?:(\w+?)_)?([0-9a-f]{8})_nohash_(\d+)\.wav(?:\.wav)?$")


def layout(src: Path, corpus: Path) -> int:
    """Speech Commands' word folders under ``src`` as ``corpus/<speaker>/<word>_<n>.wav`` and
    ``corpus/MANIFEST.tsv``; returns the number of clips."""
    import soundfile as sf

    rows = ["speaker\tpath\tduration_s\tsample_rate"]
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and p.name != "_silence_"):
        for f in sorted(folder.iterdir()):
            m = CLIP.match(f.name)
            if not m:
                continue
            word, spk, n = m.group(1) or folder.name, m.group(2), m.group(3)
            dst = corpus / spk / f"{word}_{n}.wav"
            k = 1
            while dst.exists():
                dst, k = corpus / spk / f"{word}_{n}_{k}.wav", k + 1
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dst)
            except OSError:
                shutil.copyfile(f, dst)
            info = sf.info(dst)
            rows.append(f"{spk}\t{spk}/{dst.name}\t{info.duration:.3f}\t{info.samplerate}")
    if len(rows) == 1:
        raise SystemExit(f"{src}: no Speech Commands clips (<word>/<speaker>_nohash_<n>.wav)")
    (corpus / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def _voiceprint_list(clips: dict[str, list[str]], takes: int, different: int,
                     rng: np.random.Generator) -> list[str]:
    """Each speaker with more than ``takes`` clips: their first ``takes`` joined as a voiceprint
    against each of their other clips, and ``different`` random (voiceprint of s, clip of t)
    pairs (all there are, if fewer)."""
    clips = {s: c for s, c in clips.items() if len(c) > takes}
    if len(clips) < 2:
        raise SystemExit(f"fewer than two speakers with {takes + 1} clips")
    owners = sorted(clips)
    vp = {s: "+".join(c[:takes]) for s, c in clips.items()}
    lines = {f"1 {vp[s]} {b}" for s, c in clips.items() for b in c[takes:]}
    n_clips = sum(len(c) for c in clips.values())
    n = len(lines) + min(different, sum(n_clips - len(c) for c in clips.values()))
    while len(lines) < n:
        s, t = rng.choice(owners, 2, replace=False)
        lines.add(f"0 {vp[s]} {rng.choice(clips[t])}")
    return sorted(lines, reverse=True)


def build(corpus: Path, out: Path, different: int = 5000, seed: int = 5,
          speakers: str = "held") -> dict[str, Path]:
    """The lists on the ``held`` speakers (or, ``"train"``, on the ones a distillation with
    ``--extra`` would learn from: a second sample for a model that did not)."""
    from training.data import extra_split, from_manifest

    held = set(extra_split(corpus)[speakers])
    clips: dict[str, list[str]] = {}
    for u in from_manifest(corpus):
        if u.speaker in held:
            clips.setdefault(u.speaker, []).append(u.path.relative_to(corpus).as_posix())
    clips = {s: sorted(c) for s, c in sorted(clips.items()) if len(c) > TAKES}
    if len(clips) < 2:
        raise SystemExit(f"{corpus}: fewer than two {speakers} speakers with {TAKES + 1} clips")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sc-1s-vp3": out / "sc-1s-vp3.txt"}
    paths["sc-1s-vp3"].write_text("\n".join(_voiceprint_list(clips, TAKES, different, rng)) + "\n")
    owners = sorted(clips)
    n_clips = sum(len(c) for c in clips.values())
    pairs = {f"1 {a} {b}" for c in clips.values() for a, b in itertools.combinations(c, 2)}
    n = len(pairs) + min(len(pairs), (n_clips ** 2 - sum(len(c) ** 2 for c in clips.values())) // 2)
    while len(pairs) < n:
        s, t = rng.choice(owners, 2, replace=False)
        pairs.add(f"0 {rng.choice(clips[s])} {rng.choice(clips[t])}")
    paths["sc-1s"] = out / "sc-1s.txt"
    paths["sc-1s"].write_text("\n".join(sorted(pairs, reverse=True)) + "\n")
    if sum(len(c) > ENROL_TAKES for c in clips.values()) >= 2:
        paths["sc-1s-vp8"] = out / "sc-1s-vp8.txt"
        paths["sc-1s-vp8"].write_text("\n".join(_voiceprint_list(
            clips, ENROL_TAKES, different, np.random.default_rng(seed))) + "\n")
    for name, p in paths.items():
        rows = p.read_text().splitlines()
        same = sum(r.startswith("1") for r in rows)
        print(f"{p}: {speakers} speakers, {same} same / {len(rows) - same} different")
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True,
                    help="Speech Commands folder: <speaker>/<clip>.wav and MANIFEST.tsv")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--different", type=int, default=5000)
    ap.add_argument("--speakers", choices=("held", "train"), default="held",
                    help="the held-out third (default) or the two thirds training.distill "
                         "--extra learns from (for models that did not)")
    ap.add_argument("--layout", type=Path, metavar="SRC",
                    help="first lay out the Speech Commands word folders in SRC under --corpus")
    args = ap.parse_args(argv)
    if args.layout:
        if (args.corpus / "MANIFEST.tsv").exists():
            raise SystemExit(f"{args.corpus}: already laid out (MANIFEST.tsv exists)")
        print(f"{args.corpus}: {layout(args.layout, args.corpus)} clips")
    build(args.corpus, args.out, args.different, speakers=args.speakers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
