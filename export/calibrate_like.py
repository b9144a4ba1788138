"""Length thresholds that give a model the false-accept rate of the model it replaces.

    OMP_NUM_THREADS=1 python -m export.calibrate_like --root ../shared/data --model NEW \\
        --reference default-short --out runs/like-NEW [--write-sidecar]

``export.calibrate`` balances misses and false accepts per length on the calibration keywords
(calib6: six Arabic speakers, 1 s words joined). A model distilled for rooms reads those
keywords differently from read English (its equal-error thresholds there came out 0.06 above
the LSTM it was distilled from, and refused 27 % of true speakers on ``librispeech-251-3s``,
which the old model refuses 1.6 % of), so the keywords say little about where its thresholds
belong on longer speech. This sets them by what a user of the old model already has: for each
amount of speech, the new model's threshold lets through the same share of impostors as the old
model's own threshold does, on the same trials. Better separation then shows as fewer false
rejects, never as more strangers let in.

Data: the LibriSpeech speakers outside every dev list (the 200 that
:func:`export.calibrate_fall.speakers` lists: never in a reported list; their audio, without
speaker labels, was distillation material). Each speaker's recording: three 2 s dry takes make
a voiceprint (as ``enroll`` pools them); from the rest (about 8 s), one probe of each length
in :data:`LENGTHS_S` that fits, at a random place (probes of one speaker may overlap); every probe is scored against every voiceprint by both models through the runtime path.
Per length group (by the probe's speech as the runtime measures it): the reference model's
false-accept rate at its own length threshold, and the new model's impostor-score quantile at
that rate; a monotone fit over the groups. Only ``thresholds_by_speech_s`` and ``threshold``
change (the SNR, enrolment and room offsets, relative to these, are the model's own
calibration's). Writes ``like.json``; ``--write-sidecar`` puts the table into the sidecar.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rtverify.config import SegmenterConfig
from rtverify.core.encoder import EncoderSession, l2_normalize, load_model_info, resolve_model
from rtverify.core.scoring import Scorer
from rtverify.evaluation import progress_bar
from training.cli import user_errors

from .calibrate import monotone_fit, save_fit, write_fit, write_sidecar
from .calibrate_fall import RATE, TAKE_S, TAKES, _embed, _read, speakers

LENGTHS_S = (0.8, 1.2, 1.6, 2.2, 3.0, 4.5, 6.5)
"""Probe lengths cut from each speaker's recording after the enrolment takes (seconds of
audio; the groups are by the speech the runtime finds in them)."""
SHORT_LENGTHS_S = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
"""Probe lengths for ``--short-expert`` (seconds of audio): speech of about 0.25-1.1 s."""


def collect(models: list[EncoderSession], root: Path, lengths=LENGTHS_S, limit: int | None = None,
            progress=None, seed: int = 0, held_out: bool = False) -> dict:
    """Scores of every probe against every voiceprint, per model: ``{"scores": [float
    (n_probes, n_voiceprints)] per model, "target": bool (n_probes, n_voiceprints), "speech_s":
    (n_probes,) (the first model's), "enrol_s": (n_voiceprints,) the voiceprints' speech}``."""
    seg = SegmenterConfig()
    rng = np.random.default_rng(seed)
    spk_ids, vps, probes, vp_speech = [], [[] for _ in models], [], []
    for spk, path in list(speakers(root, held_out).items())[:limit]:
        if progress:
            progress()
        x = _read(path)
        enrol_n = int(TAKES * TAKE_S * RATE)
        takes = [[_embed(m, x[int(i * TAKE_S * RATE):int((i + 1) * TAKE_S * RATE)], seg)
                  for i in range(TAKES)] for m in models]
        if any(t is None for per in takes for t in per):
            continue
        for k, per in enumerate(takes):
            vps[k].append(l2_normalize(np.mean([t.vector for t in per], axis=0)))
        vp_speech.append(float(sum(t.speech_s for t in takes[0])))
        spk_ids.append(spk)
        rest = x[enrol_n:]
        for length in lengths:  # one probe of each length that fits, anywhere in the rest
            n = int(length * RATE)
            if n > len(rest):
                continue
            start = int(rng.integers(0, len(rest) - n + 1))
            y = rest[start:start + n]
            got = [_embed(m, y, seg) for m in models]
            if all(g is not None for g in got):
                probes.append((spk, got))
    spk_arr = np.array(spk_ids)
    mats = [np.stack(v) for v in vps]
    scorers = [Scorer.for_model(m) for m in models]  # each model's own scoring, made once
    scores = [np.stack([sc.probe_scores(mat, p[k].vector, spk) for spk, p in probes])
              for k, (sc, mat) in enumerate(zip(scorers, mats))]
    return {"scores": scores,
            "target": np.stack([spk_arr == spk for spk, _ in probes]),
            "speech_s": np.array([p[0].speech_s for _, p in probes]),
            "enrol_s": np.array(vp_speech)}


def _less_enrol(data: dict, k: int, decision) -> np.ndarray:
    """Model ``k``'s scores of :func:`collect` less ``decision``'s offset for each voiceprint's
    enrolled speech, ``(n_probes, n_voiceprints)``: what its length thresholds compare."""
    return data["scores"][k] - np.array([decision.enrol_offset(e) for e in data["enrol_s"]])[None]


def margins(data: dict, k: int, decision) -> np.ndarray:
    """Model ``k``'s scores of :func:`collect` over ``decision``'s thresholds (the probe's
    speech and the voiceprint's enrolled speech), ``(n_probes, n_voiceprints)``: accepted where
    >= 0."""
    by_speech = np.array([decision.threshold_for(x) for x in data["speech_s"]])
    return _less_enrol(data, k, decision) - by_speech[:, None]


def _groups(speech: np.ndarray, n_groups: int, within: np.ndarray | None = None):
    """Boolean masks of ``n_groups`` groups of probes by speech (quantiles; only ``within``
    where given), empty groups left out."""
    pool = speech if within is None else speech[within]
    edges = np.quantile(pool, np.linspace(0, 1, n_groups + 1))
    for g in range(n_groups):
        sel = (speech >= edges[g]) & ((speech < edges[g + 1]) if g < n_groups - 1 else True)
        if within is not None:
            sel &= within
        if sel.any():
            yield sel


def _quantile_at(impostors: np.ndarray, far: float) -> float:
    """The score that lets through ``far`` of these impostor scores (the highest when 0)."""
    return float(np.quantile(impostors, 1.0 - far)) if far > 0 else float(impostors.max())


def like_thresholds(data: dict, reference, model, n_groups: int = 8,
                    pooled: bool = False) -> dict:
    """Per speech group (quantiles of the probes' speech): the reference's false-accept rate at
    its own thresholds (length and enrolled speech) and the new model's length threshold at that
    rate (its scores less its own offsets for the enrolled speech); the monotone fit. With
    ``pooled``, every group takes the reference's rate over all groups instead of its own: the
    same share of strangers let through overall, spread evenly over the amounts of speech."""
    speech = data["speech_s"]
    target = data["target"]
    ref = margins(data, 1, reference)
    new = _less_enrol(data, 0, model)
    far_pooled = float((ref[~target] >= 0).mean())
    rows = []
    for sel in _groups(speech, n_groups):
        t = target[sel]
        far_own = float((ref[sel][~t] >= 0).mean())
        far = far_pooled if pooled else far_own
        thr = _quantile_at(new[sel][~t], far)
        rows.append({"speech_s": float(np.median(speech[sel])), "n_probes": int(sel.sum()),
                     "n_target": int(t.sum()), "n_nontarget": int((~t).sum()),
                     "far_reference": far_own, "far": far, "threshold": thr,
                     "frr_reference": float((ref[sel][t] < 0).mean()),
                     "frr_new": float((new[sel][t] < thr).mean())})
    points = _fit_points(rows)
    xs = [r["speech_s"] for r in rows]
    fit = [r["threshold_fit"] for r in rows]
    return {"points": points, "threshold": round(float(np.interp(3.0, xs, fit)), 4),
            "table": rows}


def _fit_points(rows: list[dict]) -> list[list[float]]:
    """The monotone fit of the groups' thresholds (weighted by their impostor trials), stored in
    each row as ``threshold_fit``, and the table's ``[speech_s, threshold]`` points (one per
    distinct speech, rounded as the sidecar keeps them)."""
    fit = monotone_fit(np.array([r["threshold"] for r in rows]),
                       np.array([r["n_nontarget"] for r in rows], dtype=np.float64))
    points: list[list[float]] = []
    for r, f in zip(rows, fit):
        r["threshold_fit"] = float(f)
        if not points or round(float(r["speech_s"]), 2) > points[-1][0]:
            points.append([round(float(r["speech_s"]), 2), round(float(f), 4)])
    return points


def _print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """One line per group: ``(header, key, kind)`` columns, kind ``pct``, ``thr`` or ``n``."""
    fmt = {"pct": lambda v: f"{100 * v:>7.2f}%", "thr": lambda v: f"{v:>8.4f}",
           "n": lambda v: f"{v:>8}"}
    print(" ".join(f"{h:>8}" for h, _, _ in columns))
    for r in rows:
        print(" ".join(fmt[kind](r[key]) for _, key, kind in columns))


def expert_thresholds(data: dict, expert, below_s: float, far: float, n_groups: int = 4
                       ) -> dict:
    """The short expert's length thresholds when it decides for a model: per speech group of the
    probes under ``below_s`` (quantiles), the quantile of its impostor scores (less its own
    offset for the voiceprint's enrolled speech) that lets through ``far``, the model's own
    rate; a monotone fit. ``data``: :func:`collect` of the expert alone."""
    speech = data["speech_s"]
    scores = _less_enrol(data, 0, expert)
    own = margins(data, 0, expert)
    target = data["target"]
    short = speech < below_s
    if short.sum() < n_groups:
        raise ValueError(f"only {int(short.sum())} probes hold less than {below_s} s of speech")
    rows = []
    for sel in _groups(speech, n_groups, within=short):
        t = target[sel]
        thr = _quantile_at(scores[sel][~t], far)
        rows.append({"speech_s": float(np.median(speech[sel])), "n_probes": int(sel.sum()),
                     "n_target": int(t.sum()), "n_nontarget": int((~t).sum()),
                     "far_own": float((own[sel][~t] >= 0).mean()),
                     "frr_own": float((own[sel][t] < 0).mean()),
                     "far": far, "threshold": thr,
                     "frr": float((scores[sel][t] < thr).mean())})
    return {"points": _fit_points(rows), "table": rows}


def rates_at_thresholds(data: dict, k: int, decision) -> tuple[float, float]:
    """``(false-accept rate, false-reject rate)`` of model ``k`` of :func:`collect`'s data at its
    own thresholds (length and enrolled speech)."""
    margin = margins(data, k, decision)
    target = data["target"]
    return float((margin[~target] >= 0).mean()), float((margin[target] < 0).mean())


def heldout_check(args, model_path: Path) -> int:
    """The model's and the reference's false accepts and rejects at their own thresholds, on the
    calibration speakers (whose audio the room-trained default was distilled on) and on the
    dev lists' held-out speakers (which no model learnt from): a measurement, nothing fitted."""
    models = [EncoderSession(model_path, threads=1), EncoderSession(args.reference, threads=1)]
    for label, held in (("calibration speakers", False), ("held-out speakers", True)):
        data = collect(models, args.root, limit=args.speakers, held_out=held)
        for k, m in enumerate(models):
            far, frr = rates_at_thresholds(data, k, m.info.decision)
            print(f"{label:21s} {m.model_id:22s} {len(data['speech_s']):5d} probes of "
                  f"{data['target'].shape[1]:3d} speakers: false accepts {100 * far:.2f} %, "
                  f"false rejects {100 * frr:.2f} %")
    return 0


def model_far(raw: dict) -> float:
    """The false-accept rate a model's length thresholds were set to (its ``like`` calibration
    with one rate at every length)."""
    table = ((raw.get("calibration") or {}).get("like") or {}).get("table") or []
    rates = {round(float(r["far"]), 6) for r in table}
    if len(rates) != 1:
        raise ValueError("the model's sidecar holds no pooled like-calibration (one rate at "
                         "every length): run --far pooled first, or give --rate")
    return rates.pop()


def short_expert_main(args, model_path: Path) -> int:
    model = EncoderSession(model_path, threads=1)
    spec = model.short_expert
    if spec is None:
        raise SystemExit(f"{model_path}: the model has no short expert")
    raw = model.info.raw
    far = args.rate if args.rate is not None else model_far(raw)
    expert, below = spec
    # its own decision, not the one this model's sidecar may already set for it
    own = load_model_info(expert.path).decision
    n = len(speakers(args.root)) if args.speakers is None else args.speakers
    with progress_bar(sys.stderr.isatty(), "scoring short probes with the expert", n) as advance:
        data = collect([expert], args.root, lengths=SHORT_LENGTHS_S, limit=args.speakers,
                       progress=advance)
    fit = expert_thresholds(data, own, below, far, args.groups)
    block = {"expert": expert.model_id, "rate": far,
             "data": f"{int((data['speech_s'] < below).sum())} probes under {below} s of speech "
                     f"of {data['target'].shape[1]} LibriSpeech speakers outside the dev lists, "
                     "each against every speaker's 3 x 2 s dry voiceprint (the expert's)",
             "criterion": "per speech group, the expert's impostor-score quantile (less its own "
                          "offset for the enrolled speech) at the model's own false-accept rate "
                          "(its like calibration); monotone fit; no SNR offsets (the expert "
                          "decides only clean speech: min_snr_db)",
             "table": fit["table"]}
    save_fit(args.out, "short_expert", fit["points"], block)
    print(f"at the model's rate, {100 * far:.2f} % of impostors:")
    _print_table(fit["table"], [("speech", "speech_s", "thr"), ("probes", "n_probes", "n"),
                                ("FAR own", "far_own", "pct"), ("FRR own", "frr_own", "pct"),
                                ("thr", "threshold", "thr"), ("fit", "threshold_fit", "thr"),
                                ("FRR", "frr", "pct")])
    print(f"short_expert.decision.thresholds_by_speech_s: {json.dumps(fit['points'])}")
    if args.write_sidecar:
        path = write_sidecar(
            model_path, calibration=dict(raw.get("calibration") or {}, short_expert=block),
            short_expert=dict(raw["short_expert"], decision={"thresholds_by_speech_s": fit["points"],
                                                    "threshold_offsets_by_snr_db": []}))
        print(f"wrote the expert's thresholds into {path}")
    return 0


@user_errors("export.calibrate_like")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.calibrate_like", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the shared data folder")
    ap.add_argument("--model", required=True, help="the model to calibrate (name or path)")
    ap.add_argument("--reference", default="default-short",
                    help="the model whose false-accept rates it takes (name or path)")
    ap.add_argument("--out", type=Path, default=Path("runs/like"))
    ap.add_argument("--speakers", type=int, default=None, help="use only the first N speakers")
    ap.add_argument("--groups", type=int, default=8, help="speech groups (default %(default)s)")
    ap.add_argument("--far", choices=("per-length", "pooled"), default="per-length",
                    help="per-length: each speech group lets through the share of impostors "
                         "the reference does at that length; pooled: every group the "
                         "reference's share over all lengths (default %(default)s)")
    ap.add_argument("--short-expert", action="store_true",
                    help="instead: thresholds for the model's short expert when it decides for "
                         "the model, at the model's own false-accept rate (written to the "
                         "sidecar's short_expert.decision)")
    ap.add_argument("--rate", type=float, default=None,
                    help="with --short-expert: the false-accept rate (default: the model's own, "
                         "from its pooled like calibration)")
    ap.add_argument("--heldout-check", action="store_true",
                    help="instead: measure the model's and the reference's false accepts and "
                         "rejects at their own thresholds on the calibration speakers and on the "
                         "dev lists' held-out speakers (writes nothing)")
    ap.add_argument("--write-sidecar", action="store_true")
    args = ap.parse_args(argv)
    model_path = resolve_model(args.model)
    if args.heldout_check:
        return heldout_check(args, model_path)
    if args.short_expert:
        return short_expert_main(args, model_path)
    new, ref = EncoderSession(model_path, threads=1), EncoderSession(args.reference, threads=1)
    if new.features != ref.features:
        ap.error("the two models must read the same rows")
    n = len(speakers(args.root)) if args.speakers is None else args.speakers
    with progress_bar(sys.stderr.isatty(), "calibrating like the reference", n) as advance:
        data = collect([new, ref], args.root, limit=args.speakers, progress=advance)
    fit = like_thresholds(data, ref.info.decision, new.info.decision, args.groups,
                          pooled=args.far == "pooled")
    block = {"reference": ref.model_id,
             "data": f"{len(data['speech_s'])} probes of {data['target'].shape[1]} LibriSpeech "
                     "speakers outside the dev lists, each against every speaker's 3 x 2 s dry "
                     "voiceprint",
             "criterion": "per speech group, the impostor-score quantile (less the model's "
                          "own offset for the voiceprint's enrolled speech) at the reference "
                          "model's false-accept rate at its own thresholds (length and enrolled "
                          "speech)" + (", over all groups (one rate at every length)"
                                       if args.far == "pooled" else " in that group")
                          + "; monotone fit",
             "table": fit["table"]}
    save_fit(args.out, "like", fit["points"], block)
    _print_table(fit["table"], [("speech", "speech_s", "thr"), ("probes", "n_probes", "n"),
                                ("FAR ref", "far_reference", "pct"), ("FAR new", "far", "pct"),
                                ("thr", "threshold", "thr"), ("fit", "threshold_fit", "thr"),
                                ("FRR ref", "frr_reference", "pct"), ("FRR new", "frr_new", "pct")])
    print(f"thresholds_by_speech_s: {json.dumps(fit['points'])}")
    if args.write_sidecar:
        side = write_fit(model_path, new.info.raw, "like", block,
                         thresholds_by_speech_s=fit["points"], threshold=fit["threshold"])
        print(f"wrote the length thresholds into {side}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
