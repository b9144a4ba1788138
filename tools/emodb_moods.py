"""Does a voiceprint with takes in other moods hear its speaker's emotional speech better?

    .venv/bin/python -m tools.emodb_moods --wav DIR --out runs/emodb-moods
    .venv/bin/rtverify eval --trials runs/emodb-moods/neutral3-all.txt --root DIR --json

Issue 11's emotional figure is EmoDB's every pair of files (``tools.emodb_trials``): one acted
utterance against another, whatever the moods. A user enrols a voice, usually calm, and is
then heard angry, happy, sad. This writes that protocol for each of EmoDB's ten speakers, three
voiceprints of the same speaker's files, each tried against the same probes:

* ``neutral3``: three neutral takes (what a calm enrolment gives);
* ``neutral3+WF``: those three and one angry and one happy take (``enroll --add --vouch``);
* ``neutral3+WFT``: and a sad one too;
* ``mixed3``: one neutral, one angry, one happy take;

The probes are each speaker's files that none of the voiceprints holds (the same for all three):
the speaker's own as target trials, every other speaker's as impostor trials. Each voiceprint
has ``<name>-all.txt`` and one list per probe emotion (``<name>-W.txt``, ...; the impostor trials
are in every one), so ``rtverify eval`` gives the EER and the accuracy at the model's thresholds
by mood. ``takes.tsv`` names each speaker's enrolment files (for ``enroll --add`` by hand).
EmoDB's file names say who and how (``03a01Fa.wav``: speaker 03, text a01, emotion F).
"""

from __future__ import annotations

import sys

from tools.emodb_trials import NAME, emodb_args

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
            "T": "sadness", "N": "neutral"}


def enrolments(files: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each speaker's takes per voiceprint (sorted file names, so the draw is fixed)."""
    by = {}
    for f in files:
        spk, _, emo, _ = NAME.match(f).groups()
        by.setdefault(spk, {}).setdefault(emo, []).append(f)
    out = {}
    for spk, emos in sorted(by.items()):
        n, w, h, t = (emos.get(e, []) for e in "NWFT")
        if len(n) < 3 or not w or not h or not t:
            print(f"speaker {spk}: too few neutral, angry, happy or sad files; left out",
                  file=sys.stderr)
            continue
        out[spk] = {"neutral3": n[:3], "neutral3+WF": n[:3] + [w[0], h[0]],
                    "neutral3+WFT": n[:3] + [w[0], h[0], t[0]],
                    "mixed3": [n[0], w[0], h[0]]}
    return out


def main(argv=None) -> int:
    args, files = emodb_args(__doc__, argv)
    prints = enrolments(files)
    if len(prints) < 2:
        raise SystemExit(f"{args.wav}: fewer than two EmoDB speakers with 3 neutral, an angry "
                         "and a happy file")
    held = {spk: set().union(*map(set, v.values())) for spk, v in prints.items()}
    probes = [f for f in files if f[:2] in prints and f not in held[f[:2]]]
    args.out.mkdir(parents=True, exist_ok=True)
    kinds = next(iter(prints.values())).keys()
    for kind in kinds:
        for emo in ["all", *EMOTIONS]:
            lines = []
            for spk, takes in prints.items():
                a = "+".join(takes[kind])
                for p in probes:
                    same = p[:2] == spk
                    if same and emo != "all" and p[5] != emo:
                        continue
                    lines.append(f"{int(same)} {a} {p}")
            (args.out / f"{kind}-{emo}.txt").write_text("\n".join(lines) + "\n")
    (args.out / "takes.tsv").write_text(
        "".join(f"{spk}\t{kind}\t{' '.join(t)}\n" for spk, v in prints.items()
                for kind, t in v.items()))
    print(f"{args.out}: {len(prints)} speakers, {len(probes)} probes, lists "
          f"{', '.join(kinds)} x all + {len(EMOTIONS)} moods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
