"""How often ``enroll --input`` refuses a recording as several voices (issue 12), on LibriSpeech.

    .venv/bin/python -m tools.voices_check --data ../shared/data [--model M] [--json out.json]

Recordings, as a user might hand them to ``enroll --input``:

* **one speaker**: each speaker's whole LibriSpeech utterance (8-17 s of read speech, one
  recording per speaker, every speaker of ``librispeech-clean100-251spk`` with at least 8 s);
  a refusal here is a false alarm;
* **k speakers** (k = 2, 3, 5): a 4-8 s piece (cut at a quiet frame) of each of k speakers in
  turn, 0.5-1 s of quiet between them, a low noise bed under all of it; **two speakers
  alternating** (A B A B, 3-5 s pieces); and **k whole utterances** (k = 3, 5: each speaker's
  whole 8-17 s, which the recording's pauses cut into several parts per voice). Each must be
  refused;
* **several files** (``enroll --input a b c ...``, each file one take): one speaker's utterance
  cut into three files (``files_1x3``, every speaker: a refusal is a false alarm), and two
  speakers' utterances each cut into two files, given A B A B (``files_2x2``: must be refused).

``--condition reverb`` (a synthetic room, RT60 0.5-0.8 s, far field, as the dev lists' reverb)
or ``--condition babble10`` (four other speakers' babble at 10 dB SNR) puts every recording, and
each file, through that condition: one person's files in a hard room must still enrol.

Prints how many of each kind are refused (and writes it with ``--json``). The judgement is
``enroll_files``': :func:`rtverify.apps.enroll.recording_voices` of a recording,
:func:`rtverify.apps.enroll.unlike_the_rest` over several files' embeddings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tools import room_streams as rs

SR = rs.SR
KINDS = {"2_speakers": 2, "3_speakers": 3, "5_speakers": 5, "2_alternating": 2, "3_whole": 3,
         "5_whole": 5, "files_2x2": 2}
"""Recordings of several voices, and how many speakers each joins."""


def audio_voices(session, audio: np.ndarray, bar: float) -> str | None:
    """What ``enroll_files`` says of a recording's voices (None: one voice)."""
    from rtverify.apps.enroll import recording_voices
    from rtverify.io.sources import Chunk

    return recording_voices(session, [Chunk(audio.astype(np.float32), 0.0)], bar)


def files_voices(session, files: list[np.ndarray], bar: float) -> list[int] | None:
    """What ``enroll_files`` says of several files' voices: the files outside the main voice
    (None: one voice). Each file is a take, embedded as a recording."""
    from rtverify.apps.enroll import unlike_the_rest
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import Chunk

    vecs = [embed_recording(session, [Chunk(x.astype(np.float32), 0.0)]).vector for x in files]
    vecs = [v for v in vecs if v is not None]  # (enroll refuses a file without speech itself)
    if len(vecs) < 2:
        return None
    found = unlike_the_rest(np.stack(vecs), np.ones(len(vecs)), bar)
    return None if found is None else found[0]


def _cut(x: np.ndarray, k: int) -> list[np.ndarray]:
    """``x`` in ``k`` pieces of about equal length, cut at quiet frames."""
    cuts = [0] + [rs._quiet_cut(x, i * len(x) // k) for i in range(1, k)] + [len(x)]
    return [x[a:b] for a, b in zip(cuts, cuts[1:])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--model", help="a shipped model's name or a path (default: the default)")
    p.add_argument("--mixtures", type=int, default=60, help="recordings of each mixed kind")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--kinds", default=",".join(KINDS), help="mixed kinds to build "
                   f"(default: all of {', '.join(KINDS)})")
    p.add_argument("--condition", choices=("clean", "reverb", "babble10"), default="clean",
                   help="what every recording goes through (default clean)")
    p.add_argument("--bar", type=float, help="judge with this cosine bar instead of the "
                   "model's own (its sidecar's enrolment.voices_bar, else its consistency bar)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from rtverify.apps.enroll import EnrollSettings
    from rtverify.core.encoder import EncoderSession

    session = EncoderSession(args.model)
    bar = args.bar if args.bar is not None else \
        EnrollSettings().for_model(session).voices_bar
    corpus = args.data / "librispeech-clean100-251spk"
    rows = [ln.split("\t") for ln in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]]
    audio = {r[0]: rs._trim(rs._read(corpus / r[1])) for r in rows if float(r[2]) >= 8.0}
    names = sorted(audio)
    rng = np.random.default_rng(args.seed)
    room = np.random.default_rng(args.seed + 1)  # its own draws: the clean ones stay as they were

    def heard(x: np.ndarray) -> np.ndarray:
        """``x`` through ``--condition``."""
        from training import degrade

        if args.condition == "reverb":
            return degrade.reverb(x, room)
        if args.condition == "babble10":
            talkers = [audio[n] for n in room.choice(names, size=4, replace=False)]
            return degrade.mix_at_snr(x, degrade.babble_noise(talkers, len(x), room), 10.0)
        return x

    def piece(name: str, lo: float, hi: float) -> np.ndarray:
        x = audio[name]
        n = int(rng.uniform(lo, hi) * SR)
        a = rs._quiet_cut(x, int(rng.integers(0, max(1, len(x) - n))))
        return x[a:rs._quiet_cut(x, min(len(x), a + n))]

    def joined(pieces: list[np.ndarray]) -> np.ndarray:
        gaps = [np.zeros(int(rng.uniform(0.5, 1.0) * SR), np.float32) for _ in pieces]
        x = np.concatenate([y for pair in zip(pieces, gaps) for y in pair])
        return x + rs._bed(len(x), rng)

    out: dict = {"model": session.model_id, "bar": bar,
                 "condition": args.condition}
    one = [audio_voices(session, heard(audio[n] + rs._bed(len(audio[n]), rng)), bar)
           for n in names]
    out["one_speaker"] = {"n": len(one), "refused": sum(v is not None for v in one)}
    if "files_2x2" in args.kinds.split(","):
        ones = [files_voices(session, [heard(x) for x in _cut(audio[n], 3)], bar)
                for n in names]
        out["files_1x3"] = {"n": len(ones), "refused": sum(v is not None for v in ones)}
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        k = KINDS[kind]
        said = []
        for _ in range(args.mixtures):
            who = list(rng.choice(names, size=k, replace=False))
            if kind == "files_2x2":
                a, b = (_cut(audio[w], 2) for w in who)
                said.append(files_voices(
                    session, [heard(x) for x in (a[0], b[0], a[1], b[1])], bar))
                continue
            if kind.endswith("whole"):
                pieces = [audio[w] for w in who]
            elif kind.endswith("alternating"):
                pieces = [piece(who[i % 2], 3.0, 5.0) for i in range(4)]
            else:
                pieces = [piece(w, 4.0, 8.0) for w in who]
            said.append(audio_voices(session, heard(joined(pieces)), bar))
        out[kind] = {"n": len(said), "refused": sum(v is not None for v in said)}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
