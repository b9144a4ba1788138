"""How well ``verify --challenge`` tells a spoken answer from a replayed one.

    python -m benchmarks.liveness [--n 120] [--digits 5]

For each trial a random challenge is drawn; the *answer* is that challenge spoken, the *replay* is
the same voice saying another random sequence (a recording an attacker could have). Two sources:

* ``fsdd``: real people (Free Spoken Digit Dataset, 6 speakers, 8 kHz) - each digit an isolated
  recording of that speaker, joined with 0.15-0.35 s pauses (so: isolated, not connected digits);
* ``espeak``: connected digits synthesised by espeak-ng (6 voices, 140-180 words per minute).

Reported per source: the share of answers accepted (exact, and within the tolerated edits - what
``verify`` uses) and the share of replays accepted. Needs ``../shared/data/fsdd``, espeak-ng and
the ``liveness`` extra.
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from rtverify.apps.liveness import DIGIT_WORDS, MAX_EDITS, DigitRecognizer, edit_distance
from rtverify.io.resample import StreamingResampler

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7"]


def to16k(x: np.ndarray, rate: int) -> np.ndarray:
    r = StreamingResampler(rate, 16000)
    return np.concatenate([r.push(x), r.flush()])


def fsdd_speaker(data: Path):
    by: dict[str, dict[str, list[Path]]] = {}
    for f in sorted((data / "fsdd").glob("*/*.flac")):
        by.setdefault(f.parent.name, {}).setdefault(f.name.split("_")[0], []).append(f)
    return by


def fsdd_say(rng, clips: dict, digits: str) -> np.ndarray:
    parts = [np.zeros(4000, np.float32)]
    for c in digits:
        x, rate = sf.read(rng.choice(clips[c]), dtype="float32")
        parts += [to16k(x, rate), np.zeros(int(16000 * rng.uniform(0.15, 0.35)), np.float32)]
    y = np.concatenate(parts)
    return y / max(1e-6, float(np.abs(y).max())) * 0.3


def espeak_say(rng, voice: str, digits: str) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rng.choice([140, 160, 180])),
                          "--stdout", " ".join(DIGIT_WORDS[int(c)] for c in digits)],
                         capture_output=True, check=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    pad = np.zeros(8000, np.float32)
    return np.concatenate([pad, to16k(x, rate) * 0.5, pad])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.liveness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="trials per source")
    ap.add_argument("--digits", type=int, default=5)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    rec = DigitRecognizer()
    rng = random.Random(11)
    speakers = fsdd_speaker(args.data)
    names = sorted(speakers)
    for source in ("fsdd", "espeak"):
        exact = tolerated = replay = 0
        for i in range(args.n):
            challenge = "".join(rng.choice("0123456789") for _ in range(args.digits))
            other = "".join(rng.choice("0123456789") for _ in range(args.digits))
            if source == "fsdd":
                clips = speakers[names[i % len(names)]]
                answer, replayed = fsdd_say(rng, clips, challenge), fsdd_say(rng, clips, other)
            else:
                voice = VOICES[i % len(VOICES)]
                answer, replayed = espeak_say(rng, voice, challenge), espeak_say(rng, voice, other)
            heard = rec.recognise(answer, args.digits)
            exact += heard == challenge
            tolerated += edit_distance(heard, challenge) <= MAX_EDITS
            replay += edit_distance(rec.recognise(replayed, args.digits), challenge) <= MAX_EDITS
        n = args.n
        print(f"{source:6s} {args.digits} digits, {n} trials: answers heard exactly "
              f"{exact / n:.1%}, accepted (<= {MAX_EDITS} edits) {tolerated / n:.1%}; "
              f"replays of other digits accepted {replay / n:.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
