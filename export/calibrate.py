"""Calibrate the decision thresholds by amount of speech, on speakers no reported list contains.

    python -m export.calibrate --root ../shared/data --out runs/calib

Data: the Arabic Speech Commands ``calib6`` speakers (reserved for calibration: never trained on,
in no reported trial list). Each speaker said 40 keywords in 4 rounds; rounds 1-2 are used for
enrolment, rounds 3-4 for test speech, so no clip is on both sides.

* Voiceprints: as ``rtverify enroll`` makes them, ``l2_normalize(mean(take vectors))`` over 3
  takes, each take a recording of several keywords run through
  :func:`rtverify.core.pipeline.embed_recording`; several independent voiceprints per speaker.
* Test speech: recordings of 1 to ~16 keywords back to back (the clips' own leading and trailing
  silence makes the pauses), run through the same path, so each has the ``speech_s`` that
  ``verify``/``listen`` would see. Every test recording is scored against every voiceprint with
  the model's own :class:`~rtverify.core.scoring.Scorer`.
* Recordings go through :func:`rtverify.evaluation.embed_chunks` (the one embedding rule of
  every evaluation). A take or test recording on which ``listen`` would make no decision (no
  speech at all, or only speech shorter than ``min_speech_ms``: ``short_only``) is left out of
  the calibration: the thresholds are for the decisions ``listen`` makes.
* Criterion: for each length group, the threshold at the equal error rate (misses = false
  accepts: decisions balanced at that length), then a monotone (isotonic) fit over the groups
  so that noise cannot make the threshold zig-zag with length. Between the points the runtime
  interpolates linearly; beyond them it holds the end values.
* ``min_speech_s``: the lower decile of speech in the shortest length group whose EER is at
  most ``--max-eer`` (decisions on less speech say ``too_short``).

Writes ``decision.json`` (for ``python -m export --decision``) and ``calibration.json`` (the
per-length table, for ``python -m export --extra``). Runtime code only: no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtverify.config import SegmenterConfig
from rtverify.core.encoder import EncoderSession, l2_normalize
from rtverify.evaluation import embed_chunks, progress_bar
from rtverify.metrics import eer
from rtverify.core.scoring import Scorer
from rtverify.io.sources import Chunk, FileSource

CALIB6 = ("00000022", "00000023", "00000024", "00000027", "00000029", "00000030")
CORPUS = "arabic-speech-commands"
ENROL_ROUNDS = ("01", "02")
TEST_ROUNDS = ("03", "04")
GROUP_CLIPS = (1, 2, 3, 4, 6, 8, 12, 16)
"""Keywords per test recording: from ~0.6 s to ~10 s of speech."""


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray
    """float64 ``(n_tests, n_voiceprints)``."""
    target: np.ndarray
    """bool, same shape: test speaker == voiceprint speaker."""
    speech_s: np.ndarray
    """float64 ``(n_tests,)`` voiced seconds of each test recording."""
    group: np.ndarray
    """int ``(n_tests,)``: keywords in the recording."""


def isotonic(y: np.ndarray, w: np.ndarray, increasing: bool = True) -> np.ndarray:
    """Weighted least-squares monotone fit (pool adjacent violators)."""
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if not increasing:
        return -isotonic(-y, w, True)
    blocks: list[list[float]] = []  # [mean, weight, count]
    for yi, wi in zip(y, w):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(int(c), m) for m, _, c in blocks])


def monotone_fit(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The better (weighted squared error) of the increasing and decreasing isotonic fits."""
    up, down = isotonic(y, w, True), isotonic(y, w, False)
    err = lambda f: float(np.sum(w * (f - y) ** 2))  # noqa: E731
    return up if err(up) <= err(down) else down


def thresholds_by_length(sc: Scored, max_eer: float) -> dict:
    """Per length group: EER and its threshold; then the monotone fit and ``min_speech_s``."""
    rows = []
    for g in np.unique(sc.group):
        sel = sc.group == g
        s, t = sc.scores[sel], sc.target[sel]
        rate, thr = eer(s[t], s[~t])
        rows.append({"keywords": int(g), "speech_s": float(np.median(sc.speech_s[sel])),
                     "n_target": int(t.sum()), "n_nontarget": int((~t).sum()),
                     "eer": rate, "threshold_eer": thr,
                     "target_mean": float(s[t].mean()), "nontarget_mean": float(s[~t].mean()),
                     "nontarget_p99": float(np.quantile(s[~t], 0.99))})
    rows.sort(key=lambda r: r["speech_s"])
    xs = np.array([r["speech_s"] for r in rows])
    ys = np.array([r["threshold_eer"] for r in rows])
    ws = np.array([min(r["n_target"], r["n_nontarget"]) for r in rows], dtype=np.float64)
    fit = monotone_fit(ys, ws)
    for r, f in zip(rows, fit):
        r["threshold_fit"] = float(f)
    ok = [r for r in rows if r["eer"] <= max_eer]
    shortest = ok[0] if ok else rows[-1]
    # most recordings of that group must still be decided: its lower decile of speech
    min_speech = float(np.quantile(sc.speech_s[sc.group == shortest["keywords"]], 0.1))
    points = [[round(float(x), 2), round(float(f), 4)] for x, f in zip(xs, fit)]
    # keep strictly increasing seconds (the sidecar reader requires it)
    dedup: list[list[float]] = []
    for p in points:
        if dedup and p[0] <= dedup[-1][0]:
            continue
        dedup.append(p)
    typical = float(np.interp(3.0, xs, fit))
    return {"decision": {"threshold": round(typical, 4), "min_speech_s": round(min_speech, 2),
                         "thresholds_by_speech_s": dedup},
            "table": rows}


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------

def load_clip(path: Path) -> np.ndarray:
    return np.concatenate([c.samples for c in FileSource(path)])


def as_chunks(samples: np.ndarray, size: int = 1600):
    for i in range(0, len(samples), size):
        yield Chunk(samples[i:i + size], i / 16000)


class Material:
    """The clips of one speaker, by round."""

    def __init__(self, root: Path, speaker: str) -> None:
        folder = root / CORPUS / speaker
        files = sorted(folder.glob("*.flac"))
        if not files:
            raise SystemExit(f"{folder}: no clips (is --root the shared data folder?)")
        self.enrol = [f for f in files if f.stem.rsplit("_", 1)[-1] in ENROL_ROUNDS]
        self.test = [f for f in files if f.stem.rsplit("_", 1)[-1] in TEST_ROUNDS]
        self._audio: dict[Path, np.ndarray] = {}

    def audio(self, paths) -> np.ndarray:
        out = []
        for p in paths:
            if p not in self._audio:
                self._audio[p] = load_clip(p)
            out.append(self._audio[p])
        return np.concatenate(out)


def embed(session, samples: np.ndarray, segmenter: SegmenterConfig
          ) -> tuple[np.ndarray | None, float]:
    """``(unit vector, speech seconds)`` of a recording through
    :func:`rtverify.evaluation.embed_chunks`; the vector is None where ``listen`` would decide
    nothing (no speech, or only speech it drops as too short)."""
    vec, speech_s, short_only = embed_chunks(session, lambda: as_chunks(samples), segmenter)
    if short_only or np.isnan(vec).any():
        return None, speech_s
    return vec, speech_s


def collect(session, scorer: Scorer, root: Path, speakers, *, voiceprints_per_speaker: int,
            takes: int, clips_per_take: int, tests_per_group: int, groups=GROUP_CLIPS,
            segmenter: SegmenterConfig = SegmenterConfig(), seed: int = 0,
            progress=None) -> Scored:
    rng = np.random.default_rng(seed)
    mats = {s: Material(root, s) for s in speakers}
    vps, vp_spk = [], []
    for s, m in mats.items():
        for _ in range(voiceprints_per_speaker):
            take_vecs = []
            for _ in range(takes):
                pick = rng.choice(len(m.enrol), clips_per_take, replace=False)
                vec, _ = embed(session, m.audio([m.enrol[i] for i in pick]), segmenter)
                if vec is not None:
                    take_vecs.append(vec)
            if take_vecs:
                vps.append(l2_normalize(np.mean(take_vecs, axis=0)))
                vp_spk.append(s)
            if progress:
                progress()
    vps_arr = np.stack(vps)
    vp_spk_arr = np.array(vp_spk)
    rows, target, speech, group = [], [], [], []
    for s, m in mats.items():
        for g in groups:
            for _ in range(tests_per_group):
                pick = rng.choice(len(m.test), min(g, len(m.test)), replace=False)
                vec, sp = embed(session, m.audio([m.test[i] for i in pick]), segmenter)
                if progress:
                    progress()
                if vec is None:
                    continue
                rows.append(scorer.pair_scores(np.repeat(vec[None], len(vps_arr), 0), vps_arr))
                target.append(vp_spk_arr == s)
                speech.append(sp)
                group.append(g)
    return Scored(np.array(rows), np.array(target), np.array(speech), np.array(group))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the shared data folder")
    ap.add_argument("--model", type=Path, help="encoder .onnx (default: the shipped model)")
    ap.add_argument("--out", type=Path, default=Path("runs/calib"), help="output folder")
    ap.add_argument("--speakers", nargs="+", default=list(CALIB6))
    ap.add_argument("--voiceprints", type=int, default=5, help="voiceprints per speaker")
    ap.add_argument("--takes", type=int, default=3, help="enrolment takes per voiceprint")
    ap.add_argument("--clips-per-take", type=int, default=5, help="keywords per take")
    ap.add_argument("--tests", type=int, default=30, help="test recordings per speaker and length")
    ap.add_argument("--max-eer", type=float, default=0.15,
                    help="min_speech_s from the shortest length group whose EER is at most this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    session = EncoderSession(args.model, threads=1)
    scorer = Scorer.for_model(session)
    total = len(args.speakers) * (args.voiceprints + len(GROUP_CLIPS) * args.tests)
    with progress_bar(sys.stderr.isatty(), "calibrating", total) as advance:
        sc = collect(session, scorer, args.root, args.speakers,
                     voiceprints_per_speaker=args.voiceprints, takes=args.takes,
                     clips_per_take=args.clips_per_take, tests_per_group=args.tests,
                     seed=args.seed, progress=advance)
    result = thresholds_by_length(sc, args.max_eer)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "decision.json").write_text(json.dumps(result["decision"], indent=2) + "\n")
    calib = {"calibration": {
        "data": f"Arabic Speech Commands speakers {' '.join(args.speakers)} (calib6: never "
                f"trained on, in no reported list); enrolment from rounds "
                f"{'/'.join(ENROL_ROUNDS)}, test speech from rounds {'/'.join(TEST_ROUNDS)}",
        "voiceprint": f"l2_normalize(mean of {args.takes} take vectors), {args.clips_per_take} "
                      f"keywords per take, {args.voiceprints} voiceprints per speaker",
        "criterion": "EER threshold per speech length, isotonic fit over lengths; "
                     "min_speech_s = lower decile of speech in the shortest group with EER <= "
                     f"{args.max_eer}",
        "scores": scorer.describe(), "model_id": session.model_id, "seed": args.seed,
        "by_speech_length": result["table"]}}
    (args.out / "calibration.json").write_text(json.dumps(calib, indent=2) + "\n")
    print(f"{'keywords':>8} {'speech_s':>8} {'targets':>7} {'others':>7} {'EER':>7} "
          f"{'thr@EER':>8} {'fit':>7} {'tar mean':>8} {'non mean':>8} {'non p99':>8}")
    for r in result["table"]:
        print(f"{r['keywords']:>8} {r['speech_s']:>8.2f} {r['n_target']:>7} {r['n_nontarget']:>7} "
              f"{100 * r['eer']:>6.2f}% {r['threshold_eer']:>8.4f} {r['threshold_fit']:>7.4f} "
              f"{r['target_mean']:>8.4f} {r['nontarget_mean']:>8.4f} {r['nontarget_p99']:>8.4f}")
    print(f"decision: {json.dumps(result['decision'])}")
    print(f"wrote {args.out / 'decision.json'} and {args.out / 'calibration.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
