"""Noisy and reverberant dev lists on LibriSpeech speakers that distillation never sees.

    python -m training.dev_lists --root ../shared/data --out runs/dev

Distillation (training/distill.py) uses every shared recording except the speakers below, so the
reported ``librispeech-251-3s`` list (all 251 speakers) is rebuilt on the held-out ones:
``librispeech-heldout-3s.txt`` (its lines whose two files are both held-out speakers).

Held-out speakers: every 5th LibriSpeech speaker in sorted order (:func:`heldout_speakers`, 51).
Each one's speech (the full utterance, ~12.5 s, with its pauses taken out by the runtime's
segmenter: :func:`training.data.speech_audio`) is cut into up to 6 non-overlapping 2 s probes.
(Until stop 22 the utterance was cut as recorded: 4 of the 268 clean 2 s probes held no speech
at all and 14 less than a second, and 19 of the 1 s probes none, each a miss for every model.)
Conditions:

* ``clean``: as recorded;
* ``babble5``: 4 talkers at 5 dB SNR, the talkers being Arabic Speech Commands val/test speakers
  (never trained on; their clips joined);
* ``reverb``: synthetic far-field room, RT60 0.5-0.8 s, direct-to-reverberant ratio -6..0 dB;
* ``tel8k``: telephone band (8 kHz and back);
* ``shoebox``: a simulated room (``pyroomacoustics`` image source: 4-9 x 3-7 x 2.5-3.5 m,
  RT60 0.3-0.8 s, talker 1-4 m from the microphone), a new room for every probe.

Lists ``<cond>-2s.txt``: same-speaker pairs are (clean probe i, <cond> probe j) with i != j (no
clip against itself), different-speaker pairs 5000 random (clean probe of s, <cond> probe of t).

``clean-1s.txt`` (the issue's "clean, 1 s"): the same pairs with the second side cut to the
first second of its clean probe (``clean1s/``); its impostor pairs are drawn from a stream of
their own, so the lists above are the same as before it existed.

``<cond>-vp3.txt`` (stop 19; ``cond`` one of the conditions above or ``clean1s``): the issue's
protocol, a 3-utterance voiceprint against one probe. ``path_a`` joins three clean probes with
``+`` (``rtverify eval`` enrols them as ``enroll`` does: the normalised mean of the takes), two
voiceprints per speaker (probes 0-2 and 3-5), each tried against the speaker's other probes in
the condition (up to 306 same-speaker trials) and 5000 random impostor pairs, from a random
stream of their own (every list above stays byte-identical).
The audio is written under ``--out`` (not in git); paths in the lists are relative to it, plus the
``heldout`` list, relative to the shared data root.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from . import degrade
from .cli import user_errors
from .data import speech_audio

LIBRI = "librispeech-clean100-251spk"
PROBE_S = 2.0
MAX_PROBES = 6
CONDITIONS = ("clean", "babble5", "reverb", "tel8k", "shoebox")


def heldout_speakers(root: Path) -> list[str]:
    spk = sorted({line.split("\t")[0] for line in
                  (root / LIBRI / "MANIFEST.tsv").read_text().splitlines()[1:] if line})
    return spk[::5]


def _read(path: Path) -> np.ndarray:
    from rtverify.io.sources import FileSource

    return np.concatenate([c.samples for c in FileSource(path)])


def babble_talkers(root: Path, rng: np.random.Generator, n_talkers: int = 8,
                   speakers: list[str] | None = None, clips: int = 12) -> list[np.ndarray]:
    """``n_talkers`` babble talkers: each ``clips`` keywords of one Arabic Speech Commands
    speaker, joined. ``speakers``: whom to draw from (default: the val and test speakers, which
    nothing trains on; calibration passes its own)."""
    corpus = root / "arabic-speech-commands"
    if speakers is None:
        rows = [line.split() for line in (corpus / "SPLITS.tsv").read_text().splitlines()[1:]]
        speakers = sorted(s for s, split in rows if split in ("val", "test"))
    out = []
    for s in rng.choice(speakers, n_talkers, replace=False):
        files = sorted((corpus / s).glob("*.flac"))
        out.append(np.concatenate([_read(c) for c in rng.choice(files, clips, replace=False)]))
    return out


def _write_pairs(path: Path, probes: dict[str, list[str]], held: list[str], cond: str,
                 rng: np.random.Generator, n_different: int = 5000) -> Path:
    """A trial list: every (clean probe i, ``cond`` probe j != i) pair of a speaker, and
    ``n_different`` random (clean probe of s, ``cond`` probe of t) pairs; written to ``path``."""
    lines = {f"1 clean/{a} {cond}/{b}" for names in probes.values()
             for i, a in enumerate(names) for j, b in enumerate(names) if i != j}
    n_target = len(lines)
    while len(lines) < n_target + n_different:
        s, t = rng.choice(held, 2, replace=False)
        lines.add(f"0 clean/{rng.choice(probes[s])} {cond}/{rng.choice(probes[t])}")
    path.write_text("\n".join(sorted(lines, reverse=True)) + "\n")
    return path


def _write_voiceprint_pairs(path: Path, probes: dict[str, list[str]], held: list[str],
                            cond: str, rng: np.random.Generator, takes: int = 3,
                            n_different: int = 5000) -> Path:
    """A trial list with several-take voiceprints (``path_a`` joins ``takes`` clean probes with
    ``+``, as the issue measures: "a 3-utterance voiceprint"): each speaker with at least
    ``takes + 1`` probes gets two voiceprints, its first ``takes`` probes and its next
    ``takes``, each tried against the speaker's ``cond`` probes it does not hold, and
    ``n_different`` random (voiceprint of s, ``cond`` probe of t) pairs."""
    prints: dict[str, list[tuple[str, list[str]]]] = {}
    for s in held:
        names = probes[s]
        for first in (0, takes):
            enrol = names[first:first + takes]
            if len(enrol) == takes and len(names) > takes:
                rest = [b for b in names if b not in enrol]
                prints.setdefault(s, []).append(("+".join(f"clean/{a}" for a in enrol), rest))
    lines = {f"1 {vp} {cond}/{b}" for s in prints for vp, rest in prints[s] for b in rest}
    n_target = len(lines)
    owners = sorted(prints)
    while len(lines) < n_target + n_different:
        s, t = rng.choice(owners, 2, replace=False)
        vp = prints[s][rng.integers(len(prints[s]))][0]
        lines.add(f"0 {vp} {cond}/{rng.choice(probes[t])}")
    path.write_text("\n".join(sorted(lines, reverse=True)) + "\n")
    return path


def build(root: Path, out: Path, seed: int = 11) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    rooms_rng = np.random.default_rng(seed + 1)  # its own stream: the older lists stay as they were
    talkers = babble_talkers(root, rng)
    manifest = [line.split("\t") for line in (root / LIBRI / "MANIFEST.tsv").read_text()
                .splitlines()[1:] if line]
    path_of = {s: p for s, p, *_ in manifest}
    held = heldout_speakers(root)
    probes: dict[str, list[str]] = {}
    n = int(PROBE_S * degrade.RATE_HZ)
    for s in held:
        x = speech_audio(_read(root / LIBRI / path_of[s]))
        k = min(MAX_PROBES, len(x) // n)
        probes[s] = []
        for i in range(k):
            clip = x[i * n:(i + 1) * n]
            name = f"{s}/{s}_{i}.flac"
            probes[s].append(name)
            versions = {"clean": clip,
                        "babble5": degrade.mix_at_snr(
                            clip, degrade.babble_noise(
                                [talkers[j] for j in rng.choice(len(talkers), 4, replace=False)],
                                len(clip), rng), 5.0),
                        "reverb": degrade.reverb(clip, rng),
                        "tel8k": degrade.telephone(clip),
                        "shoebox": degrade.convolve_room(clip,
                                                         degrade.shoebox_response(rooms_rng))}
            for cond, y in versions.items():
                p = out / cond / name
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(p), y, degrade.RATE_HZ, subtype="PCM_16")
            versions["clean1s"] = clip[:degrade.RATE_HZ]
            p = out / "clean1s" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(p), versions["clean1s"], degrade.RATE_HZ, subtype="PCM_16")
    with_probes = [s for s in held if probes[s]]  # (5561 has 1.8 s of speech: no 2 s probe)
    lists = {}
    for cond in CONDITIONS:
        lists[cond] = _write_pairs(out / f"{cond}-2s.txt", probes, with_probes, cond, rng)
    short_rng = np.random.default_rng(seed + 2)  # its own stream, as rooms_rng
    lists["clean1s"] = _write_pairs(out / "clean-1s.txt", probes, with_probes, "clean1s",
                                    short_rng)
    vp_rng = np.random.default_rng(seed + 3)  # its own stream: the lists above stay as they were
    for cond in CONDITIONS + ("clean1s",):
        lists[f"{cond}-vp3"] = _write_voiceprint_pairs(out / f"{cond}-vp3.txt", probes,
                                                       with_probes, cond, vp_rng)
    held_set = set(held)
    kept = [ln for ln in (root / "trials" / "librispeech-251-3s.txt").read_text().splitlines()
            if ln and all(p.split("/")[1] in held_set for p in ln.split()[1:])]
    lists["heldout"] = out / "librispeech-heldout-3s.txt"
    lists["heldout"].write_text("\n".join(kept) + "\n")
    return lists


@user_errors("training.dev_lists")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/dev"))
    args = ap.parse_args(argv)
    for cond, p in build(args.root, args.out).items():
        lines = p.read_text().splitlines()
        print(f"{p}: {sum(ln.startswith('1') for ln in lines)} same / "
              f"{sum(ln.startswith('0') for ln in lines)} different")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
