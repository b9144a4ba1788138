"""Test streams for issue 12 ("real rooms"), and how ``listen`` did on them.

Three kinds of stream, all seeded and rebuilt on the fly (nothing large is stored):

- ``sounds``: target and impostor utterances with one non-speech sound in every gap (a noise
  burst, mains hum with harmonics, keyboard-like clicks, knocks, instrumental chords; -38 to
  -26 dBFS) over a quiet noise bed, and quiet white noise (-55 dBFS) in some gaps;
- ``turns``: target and impostor turns back to back, 0-150 ms between speakers;
- ``narrowband``: the target's probes resampled to 8 kHz (and 8 kHz carried at 16 kHz).

The sound synthesis (:func:`make_sound`) is used by the tests too. Run from the repository root::

    .venv/bin/python -m tools.room_streams --data ../shared/data [--streams 10] [--json out.json]
    .venv/bin/python -m tools.room_streams --data ../shared/data --kinds sounds,turns --cli

Utterances come from ``librispeech-clean100-251spk``: a target speaker is enrolled on the first
5 s of their utterance and probed with the rest cut into two pieces at quiet frames; impostors
are other speakers' 3 s crops (``librispeech-clean100-251spk-3s``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SR = 16000
SOUND_KINDS = ("noise_burst", "hum", "clicks", "knocks", "chords")


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(x.astype(np.float64) ** 2)) + 1e-20)


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** ((dbfs - _db(x)) / 20)).astype(np.float32)


def make_sound(kind: str, rng: np.random.Generator, level_dbfs: float = -30.0,
               duration_s: float | None = None) -> np.ndarray:
    """A non-speech sound, float32 at 16 kHz, scaled so its mean power is ``level_dbfs``."""
    d = duration_s if duration_s is not None else float(rng.uniform(0.6, 1.4))
    n = int(d * SR)
    t = np.arange(n) / SR
    if kind == "noise_burst":
        x = rng.standard_normal(n)
        if rng.random() < 0.5:  # pink-ish: integrate a little
            x = np.cumsum(x) * 0.02 + x * 0.3
            x -= np.convolve(x, np.ones(200) / 200, mode="same")
        env = np.minimum(1, np.minimum(t, d - t) / 0.05)
        x = x * env
    elif kind == "hum":
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        x = sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28))
                for k, a in zip(range(1, 8), (1, .6, .5, .3, .25, .15, .1)))
        x = x + 0.02 * rng.standard_normal(n)
    elif kind == "clicks":
        x = np.zeros(n)
        pos = 0
        while pos < n - 400:
            burst = rng.standard_normal(240) * np.exp(-np.arange(240) / 30.0)
            x[pos:pos + 240] += burst
            pos += int(rng.uniform(0.08, 0.22) * SR)
    elif kind == "knocks":
        x = np.zeros(n)
        k = int(rng.integers(2, 5))
        f = rng.uniform(90, 250)
        for i in range(k):
            p = int((0.05 + i * rng.uniform(0.18, 0.28)) * SR)
            if p >= n - 10:
                break
            m = min(n - p, int(0.15 * SR))
            tt = np.arange(m) / SR
            x[p:p + m] += (np.sin(2 * np.pi * f * tt) + 0.5 * np.sin(2 * np.pi * 2.7 * f * tt)
                           + 0.3 * rng.standard_normal(m) * np.exp(-tt / 0.005)) * np.exp(-tt / 0.03)
    elif kind == "chords":
        x = np.zeros(n)
        root = 110 * 2 ** (rng.integers(0, 12) / 12)
        n_chords = int(rng.integers(1, 3))
        seg = n // n_chords
        for c in range(n_chords):
            tt = np.arange(seg) / SR
            r = root * 2 ** ((5 * c) / 12)
            for semis in (0, 4, 7, 12):
                f = r * 2 ** (semis / 12)
                for h, a in zip(range(1, 6), (1, .5, .3, .2, .1)):
                    x[c * seg:(c + 1) * seg] += a * np.sin(2 * np.pi * f * h * tt) * np.exp(-tt / 0.6)
    elif kind == "quiet_noise":
        x = rng.standard_normal(n)
    else:
        raise ValueError(f"unknown sound {kind!r}")
    return _at_level(np.asarray(x), level_dbfs)


# -- streams from the shared corpora ----------------------------------------------------------
def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    x = x - x.mean()
    if rate != SR:
        from rtverify.io.resample import StreamingResampler

        r = StreamingResampler(rate, SR)
        x = np.concatenate([r.push(x), r.flush()])
    return x.astype(np.float32)


def _quiet_cut(x: np.ndarray, near: int, span: int = SR // 2) -> int:
    """Index of the quietest 30 ms frame within ``span`` of ``near``."""
    f = 480
    lo, hi = max(0, near - span), min(len(x) - f, near + span)
    best = min(range(lo, hi, 160), key=lambda i: float(np.dot(x[i:i + f], x[i:i + f])))
    return best + f // 2


def _trim(x: np.ndarray) -> np.ndarray:
    """Trim leading/trailing near-silence (frames 35 dB under the loudest)."""
    f = 480
    lv = np.array([_db(x[i:i + f]) for i in range(0, len(x) - f, f)])
    keep = np.where(lv > lv.max() - 35)[0]
    return x[max(0, keep[0] * f - 1600): min(len(x), (keep[-1] + 1) * f + 1600)]


ENROL_SPEECH_S = 4.0
"""Held-out targets' enrolment: the first pause after this much speech (about what the first 5 s
of the other targets' recordings hold)."""


def _speech_s(x: np.ndarray) -> float:
    """Seconds of speech the runtime's segmenter finds in ``x``."""
    from training.data import speech_segments  # no torch

    return sum(len(seg) for seg in speech_segments(x)) / SR


@dataclass
class Speaker:
    name: str
    enrol: np.ndarray
    probes: list[np.ndarray]
    impostors: list[np.ndarray] | None = None
    """Held-out draws only: this stream's impostor utterances (other speakers' crops)."""
    nb_impostors: list[np.ndarray] | None = None
    """Held-out draws only: the impostors of the narrowband check."""


def speakers(data: Path, n: int, seed: int = 12, pool: str = "all", nb_impostors: int = 30
             ) -> tuple[list[Speaker], list[np.ndarray]]:
    """``n`` target speakers (enrolment audio + two probes) and impostor utterances from other
    speakers.

    ``pool="all"``: targets from every LibriSpeech speaker, impostors the 3 s crops of the
    speakers that are no target (the figures in README before stop 24). ``pool="heldout"``:
    only the 51 speakers the dev lists hold out (:func:`training.dev_lists.heldout_speakers`),
    whose audio no model was trained, distilled or calibrated on; each target gets its own
    impostors, crops of the other held-out speakers drawn at random (``Speaker.impostors``,
    ``Speaker.nb_impostors``), as there are too few speakers to keep them apart between streams.
    """
    corpus = data / "librispeech-clean100-251spk"
    rows = [line.split("\t") for line in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]]
    rows = [r for r in rows if float(r[2]) >= 11.0]
    crops = data / "librispeech-clean100-251spk-3s"
    crow = [line.split("\t") for line in (crops / "MANIFEST.tsv").read_text().splitlines()[1:]]
    if pool == "heldout":
        from training.dev_lists import heldout_speakers  # the speaker list only (no torch)

        held = set(heldout_speakers(data))
        rows = [r for r in rows if r[0] in held]
        crow = [r for r in crow if r[0] in held]
        if n > len(rows):
            raise SystemExit(f"only {len(rows)} held-out speakers have 11 s of speech; "
                             f"asked for {n} streams")
    elif pool != "all":
        raise ValueError(f"unknown speaker pool {pool!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    targets = []
    for i in order[:n]:
        x = _trim(_read(corpus / rows[i][1]))
        c1 = _quiet_cut(x, 5 * SR)
        if pool == "heldout":  # as a user enrols: on enough speech (`enroll` asks for some),
            # not on 5 s of audio whatever it holds (three held-out speakers' first 5 s hold
            # 1.1-2 s of speech); the old pool's figures stay as they were
            while _speech_s(x[:c1]) < ENROL_SPEECH_S and c1 < len(x) - 5 * SR:
                c1 = _quiet_cut(x, c1 + SR // 2)
        c2 = _quiet_cut(x, c1 + (len(x) - c1) // 2)
        targets.append(Speaker(rows[i][0], x[:c1], [_trim(x[c1:c2]), _trim(x[c2:])]))
    if pool == "heldout":
        audio = {r[1]: _trim(_read(crops / r[1])) for r in crow}
        for t in targets:
            others = [r[1] for r in crow if r[0] != t.name]
            pick = rng.permutation(len(others))
            t.impostors = [audio[others[j]] for j in pick[:4]]
            t.nb_impostors = [audio[others[j]] for j in pick[4:4 + nb_impostors]]
        return targets, []
    used = {rows[i][0] for i in order[:n]}
    impostors = [_trim(_read(crops / r[1])) for r in crow if r[0] not in used]
    rng.shuffle(impostors)
    return targets, impostors


@dataclass
class Stream:
    audio: np.ndarray
    utterances: list[dict] = field(default_factory=list)
    """``{"start_s", "end_s", "target": bool}`` each."""
    sounds: list[dict] = field(default_factory=list)
    """``{"start_s", "end_s", "kind"}`` each."""


def _bed(n: int, rng: np.random.Generator, dbfs: float = -65.0) -> np.ndarray:
    return _at_level(rng.standard_normal(n), dbfs)


def sounds_stream(target: Speaker, impostors: list[np.ndarray], rng: np.random.Generator
                  ) -> Stream:
    """Target probes and impostor utterances alternating, a sound in every gap."""
    utts = [(p, True) for p in target.probes] + [(imp, False) for imp in impostors]
    order = rng.permutation(len(utts))
    parts, st = [_bed(SR, rng)], Stream(np.zeros(0))
    pos = SR
    for k, j in enumerate(order):
        x, is_target = utts[j]
        st.utterances.append({"start_s": pos / SR, "end_s": (pos + len(x)) / SR,
                              "target": is_target})
        parts.append(x + _bed(len(x), rng))
        pos += len(x)
        kind = SOUND_KINDS[int(rng.integers(len(SOUND_KINDS)))]
        gap1, gap2 = _bed(int(rng.uniform(0.7, 1.2) * SR), rng), \
            _bed(int(rng.uniform(0.7, 1.2) * SR), rng)
        if k % 3 == 2:  # quiet white noise lying in the gap as well
            gap1 = gap1 + np.resize(make_sound("quiet_noise", rng, -55.0, len(gap1) / SR), len(gap1))
        snd = make_sound(kind, rng, float(rng.uniform(-38, -26)))
        parts += [gap1, snd + _bed(len(snd), rng), gap2]
        s0 = pos + len(gap1)
        st.sounds.append({"start_s": s0 / SR, "end_s": (s0 + len(snd)) / SR, "kind": kind})
        pos += len(gap1) + len(snd) + len(gap2)
    st.audio = np.concatenate(parts).astype(np.float32)
    return st


def turns_stream(target: Speaker, impostors: list[np.ndarray], rng: np.random.Generator
                 ) -> Stream:
    """Target probes and impostor turns back to back (0-150 ms between speakers), in pairs."""
    parts, st = [_bed(SR, rng)], Stream(np.zeros(0))
    pos = SR
    pairs = [(target.probes[0], impostors[0]), (impostors[1], target.probes[1]),
             (target.probes[1], impostors[2])]
    for a, b in pairs:
        for x in (a, b):
            is_target = any(x is p for p in target.probes)
            st.utterances.append({"start_s": pos / SR, "end_s": (pos + len(x)) / SR,
                                  "target": is_target})
            parts.append(x + _bed(len(x), rng))
            pos += len(x)
            if x is a:
                g = _bed(int(rng.uniform(0.0, 0.15) * SR), rng)
                parts.append(g)
                pos += len(g)
        g = _bed(int(1.5 * SR), rng)
        parts.append(g)
        pos += len(g)
    st.audio = np.concatenate(parts).astype(np.float32)
    return st


# -- running listen's pipeline on them --------------------------------------------------------
def enrol_vector(session, audio: np.ndarray):
    """The voiceprint ``enroll --input`` would make of ``audio`` (with the speech it holds, for
    the model's thresholds by enrolled speech), without the store."""
    from rtverify.core.pipeline import embed_recording
    from rtverify.core.scoring import VoiceVector
    from rtverify.io.sources import Chunk

    rec = embed_recording(session, [Chunk(audio, 0.0)])
    out = VoiceVector(rec.vector, None, rec.speech_s)
    expert = session.short_expert  # enrolment stores the short expert's vector too
    if expert is not None:
        out.companions = {expert[0].model_id: enrol_vector(expert[0], audio)}
    return out


def with_narrowband(wide, narrow):
    """``wide`` (a VoiceVector of :func:`enrol_vector`) carrying ``narrow`` as its narrowband
    embedding, its companions likewise (as enrolment makes a voiceprint now)."""
    from rtverify.core.scoring import VoiceVector

    out = VoiceVector(wide, narrow, wide.enrol_speech_s)
    out.companions = {k: with_narrowband(v, narrow.companions[k])
                      for k, v in wide.companions.items()}
    return out


def run_stream(session, voiceprints: dict, audio: np.ndarray, chunk: int = 1600,
               margin: float = 0.0) -> list:
    """Every decision and dropped event of ``listen``'s pipeline on ``audio``."""
    from rtverify.core.pipeline import Verifier
    from rtverify.events import DecisionEvent, SegmentDropped
    from rtverify.io.sources import Chunk

    v = Verifier(session, voiceprints, max_pending=8, provisional=False, margin=margin)
    src = (Chunk(audio[i:i + chunk], i / SR) for i in range(0, len(audio), chunk))
    return [e for e in v.process(src) if isinstance(e, (DecisionEvent, SegmentDropped))]


def run_cli(enrol: np.ndarray, audio: np.ndarray, workdir: Path, model: str | None = None,
            margin: float = 0.0) -> list:
    """The same through the CLI, as a user runs it: ``rtverify --store S enroll --name target
    --input enrol.wav --min-speech 2`` (two of the first ten targets' 5 s enrolment clips hold
    under the default 3 s of speech), then ``rtverify --store S listen --name target --input
    stream.wav --json``; returns its decision events."""
    import subprocess

    import soundfile as sf

    from rtverify.events import DecisionEvent

    workdir.mkdir(parents=True, exist_ok=True)
    store, enrol_wav, stream_wav = workdir / "store", workdir / "enrol.wav", workdir / "stream.wav"
    sf.write(enrol_wav, enrol, SR, subtype="PCM_16")
    sf.write(stream_wav, audio, SR, subtype="PCM_16")
    cli = [sys.executable, "-m", "rtverify", "--store", str(store)]
    extra = ["--model", model] if model else []
    subprocess.run(cli + ["enroll", "--name", "target", "--input", str(enrol_wav),
                          "--min-speech", "2"] + extra, check=True, capture_output=True)
    out = subprocess.run(cli + ["listen", "--name", "target", "--input", str(stream_wav),
                                "--json"] + extra + (["--margin", str(margin)] if margin else []),
                         check=True, capture_output=True, text=True)
    fields = DecisionEvent.__dataclass_fields__
    return [DecisionEvent(**{k: v for k, v in e.items() if k in fields})
            for e in map(json.loads, out.stdout.splitlines()) if e.get("event") == "decision"]


def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score_stream(st: Stream, events: list, name: str = "target") -> dict:
    """The issue's criteria on one stream."""
    from rtverify.events import DecisionEvent

    decisions = [e for e in events if isinstance(e, DecisionEvent)]
    acc = [d for d in decisions if d.accepted and d.speaker == name]
    out = {"sounds": len(st.sounds), "sounds_decided": 0, "utterances": len(st.utterances),
           "utterances_right": 0, "wrong": [],
           # speaker changes placed inside one person's utterance, 0.3 s or more from its ends
           "false_splits": sum(1 for d in decisions if d.end_reason == "speaker_change" and any(
               u["start_s"] + 0.3 < d.end_s < u["end_s"] - 0.3 for u in st.utterances))}
    for s in st.sounds:
        # a decision "on" a sound: one that overlaps it by more than a quarter of the sound and
        # overlaps no utterance (a sound merged into an utterance is not a decision on it)
        for d in decisions:
            ov = _overlap(d.start_s, d.end_s, s["start_s"], s["end_s"])
            on_speech = any(_overlap(d.start_s, d.end_s, u["start_s"], u["end_s"]) > 0.1
                            for u in st.utterances)
            if ov > 0.25 * (s["end_s"] - s["start_s"]) and not on_speech:
                out["sounds_decided"] += 1
                break
    for u in st.utterances:
        length = u["end_s"] - u["start_s"]
        cover = sum(_overlap(d.start_s, d.end_s, u["start_s"], u["end_s"]) for d in acc)
        if u["target"]:
            ok = cover >= 0.5 * length
        else:
            ok = cover <= min(1.0, 0.25 * length)
        out["utterances_right"] += ok
        if not ok:
            out["wrong"].append({**u, "accepted_cover_s": round(cover, 2)})
    return out


def explain(title: str, st: Stream, events: list) -> None:
    """The truth and every decision of a stream, for seeing why it went wrong (stderr)."""
    from rtverify.events import DecisionEvent

    print(f"== {title}", file=sys.stderr)
    for u in st.utterances:
        print(f"   truth    {u['start_s']:6.2f}-{u['end_s']:6.2f}  "
              f"{'target' if u['target'] else 'impostor'}", file=sys.stderr)
    for d in events:
        if isinstance(d, DecisionEvent):
            snr = "-" if d.snr_db is None else f"{d.snr_db:.0f} dB"
            print(f"   decision {d.start_s:6.2f}-{d.end_s:6.2f}  score {d.score:.3f}  threshold "
                  f"{d.threshold:.3f}  snr {snr}  speech {d.speech_s:.2f} s  {d.end_reason}"
                  f"{'  ACCEPTED' if d.accepted else ''}", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--kinds", default="sounds,turns,narrowband")
    p.add_argument("--seed", type=int, default=1212,
                   help="the streams' draw (order of the utterances, gaps, sounds; default "
                        "1212: the figures in README); the speakers and utterances stay the "
                        "same (--speaker-seed draws those)")
    p.add_argument("--speakers", choices=("all", "heldout"), default="all",
                   help="whom the targets and impostors are: any LibriSpeech speaker (all; "
                        "the default LSTM was distilled on 200 of them, without labels) or "
                        "only the 51 held out of every training, distillation and calibration "
                        "(heldout, at most 51 streams)")
    p.add_argument("--speaker-seed", type=int, default=12,
                   help="which speakers are targets and which utterances impostors (default 12)")
    p.add_argument("--nb-impostors", type=int, default=30, help="impostor utterances tried "
                   "against each voice at 16 and 8 kHz in the narrowband streams (default 30)")
    p.add_argument("--json", type=Path)
    p.add_argument("--model", help="encoder: a shipped model's name or a path (default: the "
                   "shipped default)")
    p.add_argument("--explain", action="store_true", help="print the truth and the decisions "
                   "of every stream that went wrong (stderr)")
    p.add_argument("--write", type=Path, help="also write each stream (WAV), the target's "
                   "enrolment audio and the truth (JSON) here")
    p.add_argument("--margin", type=float, default=0.0, metavar="X",
                   help="decide as listen --margin X (the model's thresholds raised by X)")
    p.add_argument("--cli", action="store_true", help="run the sounds and turns streams through "
                   "the rtverify CLI (enroll, then listen --json in a subprocess) instead of "
                   "in-process")
    args = p.parse_args(argv)
    from rtverify.core.encoder import EncoderSession
    from rtverify.io.resample import StreamingResampler

    session = EncoderSession(args.model)
    targets, impostors = speakers(args.data, args.streams, args.speaker_seed,
                                  args.speakers, args.nb_impostors)
    rng = np.random.default_rng(args.seed)
    kinds = args.kinds.split(",")
    report: dict = {}
    for kind in kinds:
        total: dict = {}
        for i, t in enumerate(targets):
            vp = {"target": enrol_vector(session, t.enrol)}
            if kind == "narrowband":  # a voiceprint as enrolment now makes it
                from rtverify.core.scoring import narrowband_audio

                vp_band = {"target": with_narrowband(vp["target"], enrol_vector(
                    session, narrowband_audio(t.enrol)))}
            if kind == "sounds":
                st = sounds_stream(t, t.impostors or impostors[4 * i:4 * i + 4], rng)
            elif kind == "turns":
                st = turns_stream(t, (t.impostors or impostors[4 * i:4 * i + 4])[:3], rng)
            elif kind == "narrowband":
                res = []
                for p_ in t.probes:
                    x = np.concatenate([_bed(SR, rng), p_, _bed(SR, rng)])
                    wide = run_stream(session, vp, x, margin=args.margin)
                    nb8 = StreamingResampler(SR, 8000)
                    x8 = np.concatenate([nb8.push(x), nb8.flush()])  # an 8 kHz recording
                    up = StreamingResampler(8000, SR)  # as FileSource reads it, or carried at 16k
                    x8_16 = np.concatenate([up.push(x8), up.flush()])
                    # old voiceprint: wideband only
                    narrow = run_stream(session, vp, x8_16, margin=args.margin)
                    matched = run_stream(session, vp_band, x8_16, margin=args.margin)
                    wide_new = run_stream(session, vp_band, x, margin=args.margin)
                    res.append((wide, narrow, matched, wide_new))
                for wide, narrow, matched, wide_new in res:
                    for label, evs in (("wide", wide), ("narrow_old_print", narrow),
                                       ("narrow_band_matched", matched),
                                       ("wide_band_print", wide_new)):
                        ds = [e for e in evs if hasattr(e, "accepted")]
                        total.setdefault(f"{label}_scores", []).append(
                            max((d.scores.get("target", -9) for d in ds), default=None))
                        total.setdefault(f"{label}_accepted", 0)
                        total[f"{label}_accepted"] += any(d.accepted for d in ds)
                        total.setdefault(f"{label}_n", 0)
                        total[f"{label}_n"] += 1
                        total.setdefault(f"{label}_bands", []).append(
                            sorted({d.band for d in ds}))
                # impostors (utterances the other streams do not use) at 16 kHz against the
                # wideband voiceprint, and at 8 kHz against the band-matched one: a better
                # narrowband score must not come from accepting more strangers
                irng = np.random.default_rng(1300 + i)  # apart from rng: the figures above stay
                for imp in (t.nb_impostors if t.nb_impostors is not None
                            else impostors[40:40 + args.nb_impostors]):
                    x = np.concatenate([_bed(SR, irng), imp, _bed(SR, irng)])
                    for label, vps, audio in (("impostor_wide", vp, x),
                                              ("impostor_narrow", vp_band, narrowband_audio(x))):
                        ds = [e for e in run_stream(session, vps, audio, margin=args.margin)
                              if hasattr(e, "accepted")]
                        total.setdefault(f"{label}_accepted", 0)
                        total[f"{label}_accepted"] += any(d.accepted for d in ds)
                        total.setdefault(f"{label}_n", 0)
                        total[f"{label}_n"] += 1
                continue
            else:
                raise SystemExit(f"unknown kind {kind}")
            if args.write:
                import soundfile as sf

                args.write.mkdir(parents=True, exist_ok=True)
                sf.write(args.write / f"{kind}_{i:02d}.wav", st.audio, SR, subtype="PCM_16")
                sf.write(args.write / f"enrol_{i:02d}.wav", t.enrol, SR, subtype="PCM_16")
                (args.write / f"{kind}_{i:02d}.json").write_text(json.dumps(
                    {"utterances": st.utterances, "sounds": st.sounds}, indent=1))
            if args.cli:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    events = run_cli(t.enrol, st.audio, Path(tmp), args.model, args.margin)
            else:
                events = run_stream(session, vp, st.audio, margin=args.margin)
            r = score_stream(st, events)
            if args.explain and r["wrong"]:
                explain(f"{kind} stream {i} (speaker {t.name})", st, events)
            for k, v in r.items():
                total[k] = total.get(k, 0 if not isinstance(v, list) else []) + v
        report[kind] = total
        brief = {k: (round(float(np.mean([x for x in v if x is not None])), 4)
                     if k.endswith("_scores") else v)
                 for k, v in total.items() if k != "wrong" and not k.endswith("_bands")}
        bands = {k: sum(v == ["narrow"] for v in total[k]) for k in total if k.endswith("_bands")}
        if bands:
            brief["decided_narrow"] = bands
        print(kind, json.dumps(brief, default=float), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
