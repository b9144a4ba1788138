"""A trials list of acted emotional speech (issue 11: "acted emotional speech (German, all
pairs)"), from a folder of Berlin Emotional Speech Database (EmoDB) recordings.

    .venv/bin/python -m tools.emodb_trials --wav DIR --out runs/emodb/emodb-all.txt
    .venv/bin/rtverify eval --trials runs/emodb/emodb-all.txt --root DIR --json

EmoDB (Burkhardt et al., Interspeech 2005): 10 actors (5 women, 5 men) speak 10 German
sentences in 7 emotions (anger, boredom, disgust, fear, happiness, sadness, neutral); file names
say who and how (``03a01Fa.wav``: speaker 03, text a01, emotion F, version a). The corpus is not
part of the shared data and is not in this repository: point ``--wav`` at a copy (the team used
the 535 files of a public GitHub project, ``sylaschacko/voice-emotion-analysis``, which resampled
them to 22.05 kHz and cut or padded each to 2 s; the runtime resamples them to 16 kHz). Every
pair of different files is a trial (label 1 when the speaker is the same), so each speaker's
angry speech is tried against their sad, bored, ... speech, as the issue measures.
"""

from __future__ import annotations

import argparse
import itertools
import re
from pathlib import Path

NAME = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])\.wav$")


def emodb_files(wav: Path) -> list[str]:
    """The EmoDB-named ``.wav`` files in ``wav``, sorted."""
    return sorted(p.name for p in wav.glob("*.wav") if NAME.match(p.name))


def emodb_args(doc: str, argv=None) -> tuple[argparse.Namespace, list[str]]:
    """The EmoDB tools' arguments (``--wav``, ``--out``) and the EmoDB files in ``--wav``."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wav", type=Path, required=True, help="folder of EmoDB .wav files")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return args, emodb_files(args.wav)


def main(argv=None) -> int:
    args, files = emodb_args(__doc__, argv)
    if len(files) < 2:
        raise SystemExit(f"{args.wav}: no EmoDB-named .wav files (like 03a01Fa.wav)")
    lines = [f"{int(a[:2] == b[:2])} {a} {b}" for a, b in itertools.combinations(files, 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    same = sum(ln.startswith("1") for ln in lines)
    print(f"{args.out}: {len(files)} files of {len({f[:2] for f in files})} speakers, "
          f"{same} same / {len(lines) - same} different")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
