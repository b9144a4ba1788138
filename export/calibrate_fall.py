"""Threshold offsets for speech in a more reverberant room than its enrolment
(``decision.threshold_offsets_by_fall_change_db``).

    OMP_NUM_THREADS=1 python -m export.calibrate_fall --root ../shared/data --model M \\
        --out runs/fall-M [--write-sidecar]

The runtime's SNR estimate does not see a room: reverberant speech is loud over a quiet floor,
yet its scores against a dry voiceprint fall as far as in noise, and the length thresholds
refuse most true speakers there. Each decision now carries ``fall_db``, how steeply its speech
falls silent (:func:`rtverify.core.scoring.fall_db`: dry speech about 10 dB per 10 ms, the same
in a reverberant room about 7), and each voiceprint the same of its enrolment takes; this
calibrates offsets by the *change* from enrolment to utterance (negative: a more reverberant
room), as ``export.calibrate --snr`` does by SNR, and the runtime takes the lower of the two
offsets. The change, not the utterance's own figure: recordings made and enrolled in the same
roomy place (the Arabic keywords read about 7.7) are no mismatch, and an offset by the
utterance's figure alone lowered the default's thresholds there until 28 % of impostors passed
on arabic-test-1s (4.4 % before).

Data: the calibration keywords (calib6) are not dry (phone recordings in ordinary rooms: their
``fall_db`` sits between dry and reverberant LibriSpeech, ``python -m tools.reverb_probe``), so
this uses the LibriSpeech speakers outside every dev list (the 200 that are not held out:
never in a reported list; used before only by the unshipped distillation). Each speaker's
recording: its first 6 s are three 2 s enrolment takes (a voiceprint as ``enroll`` makes one),
the rest up to two test probes of 2.5 s, heard dry, in a synthetic room (RT60 0.3-1.0 s,
direct-to-reverberant -6..+6 dB) and in a simulated shoebox room (``pyroomacoustics``, RT60
0.3-0.9 s, talker 1-4 m): ``training.degrade``, a new room for every probe. Every probe is
scored against every voiceprint through the runtime path.

Criterion (:func:`export.calibrate.offsets_by_snr` on the change axis, per (probe, voiceprint)
pair: the probe's ``fall_db`` minus the voiceprint's, as the runtime judges every voice): bins
of the change, per bin the equal-error threshold of (score minus the model's length threshold)
relative to the dry probes' own, raised where needed so that at most ``--max-far`` of the bin's
impostor scores pass (default: the false-accept rate of the model's length thresholds on its
clean calibration keywords, from the sidecar's SNR calibration: a room never buys an impostor
better odds than a clean utterance has there; at most 1 %); a monotone fit, clipped at 0 (a
room only ever lowers a threshold), and no offset within the change that dry speech itself
spreads over (above its 10th percentile). Writes ``fall.json`` (the table) and, with ``--write-sidecar``, the
offsets into the sidecar's decision block (everything else kept). Runtime code only, plus
``training.degrade`` (numpy/scipy, pyroomacoustics for the shoebox rooms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rtverify.config import SegmenterConfig
from rtverify.core.encoder import EncoderSession, l2_normalize, resolve_model
from rtverify.core.pipeline import speech_weighted
from rtverify.core.scoring import Scorer
from rtverify.evaluation import embed_chunks, progress_bar
from training.cli import user_errors

from .calibrate import Scored, as_chunks, offsets_by_snr, save_fit, write_fit

LIBRI = "librispeech-clean100-251spk"
TAKE_S = 2.0
TAKES = 3
PROBE_S = 2.5
MAX_PROBES = 2
CONDITIONS = ("clean", "reverb", "shoebox")
RT60_S = (0.3, 1.0)
DRR_DB = (-6.0, 6.0)
SHOEBOX_RT60_S = (0.3, 0.9)
RATE = 16000
MAX_FAR = 0.01
"""The false-accept cap is at most this (share of a bin's impostor scores): reverberation
estimates of single recordings are noisy, and a looser cap (the default's 6.2 %) let 2-3 % of
dry LibriSpeech impostors through (1.2 % at this one, against 0.8 % without offsets)."""


def speakers(root: Path, held_out: bool = False) -> dict[str, Path]:
    """LibriSpeech speakers outside the dev lists' held-out ones -> their recording (with
    ``held_out``: the held-out ones instead, for measuring only, never for fitting)."""
    from training.dev_lists import heldout_speakers  # the speaker list only (no torch)

    held = set(heldout_speakers(root))
    out = {}
    for line in (root / LIBRI / "MANIFEST.tsv").read_text().splitlines()[1:]:
        if line.strip():
            spk, rel = line.split("\t")[:2]
            if (spk in held) == held_out:
                out[spk] = root / LIBRI / rel
    return out


def _read(path: Path) -> np.ndarray:
    from rtverify.io.sources import FileSource

    return np.concatenate([c.samples for c in FileSource(path)])


def _embed(session, x: np.ndarray, segmenter: SegmenterConfig):
    e = embed_chunks(session, lambda: as_chunks(x), segmenter)
    if e.short_only or np.isnan(e.vector).any():
        return None
    return e


def collect(session, scorer: Scorer, root: Path, *, seed: int = 0, limit: int | None = None,
            progress=None) -> Scored:
    """Dry voiceprints and dry and reverberant probes, scored: one row per (probe, voiceprint)
    pair, its ``snr_db`` the probe's ``fall_db`` minus the voiceprint's (the axis
    :func:`offsets_by_snr` bins on)."""
    from training import degrade

    rng = np.random.default_rng(seed)
    seg = SegmenterConfig()
    vps, vp_spk, vp_fall, probes = [], [], {}, []
    for spk, path in list(speakers(root).items())[:limit]:
        x = _read(path)
        enrol_n = int(TAKES * TAKE_S * RATE)
        rest = x[enrol_n:]
        n_probes = min(MAX_PROBES, int(len(rest) // (PROBE_S * RATE)))
        if progress:
            progress()
        if n_probes == 0:
            continue
        takes = [_embed(session, x[int(i * TAKE_S * RATE):int((i + 1) * TAKE_S * RATE)], seg)
                 for i in range(TAKES)]
        takes = [t for t in takes if t is not None]
        fall = speech_weighted((t.fall_db, t.speech_s) for t in takes)  # as enrolment pools
        if fall is None:
            continue
        vps.append(l2_normalize(np.mean([t.vector for t in takes], axis=0)))
        vp_fall[spk] = fall
        vp_spk.append(spk)
        for j in range(n_probes):
            y = rest[int(j * PROBE_S * RATE):int((j + 1) * PROBE_S * RATE)]
            for cond in CONDITIONS:
                if cond == "reverb":
                    z = degrade.reverb(y, rng, rt60_s=RT60_S, drr_db=DRR_DB)
                elif cond == "shoebox":
                    z = degrade.convolve_room(y, degrade.shoebox_response(
                        rng, rt60_s=SHOEBOX_RT60_S))
                else:
                    z = y
                probes.append((spk, cond, _embed(session, z, seg)))
    vps_arr, vp_spk_arr = np.stack(vps), np.array(vp_spk)
    vp_falls = np.array([vp_fall[v] for v in vp_spk])
    # one row per (probe, voiceprint) pair: the runtime judges every voice by the change from
    # its own enrolment, impostors' voices included, so the bins must hold pairs, not probes
    rows, target, speech, change, cond = [], [], [], [], []
    for spk, c, e in probes:
        if e is None or not np.isfinite(e.fall_db):
            continue
        rows.append(scorer.probe_scores(vps_arr, e.vector, spk))
        target.append(vp_spk_arr == spk)
        speech.append(np.full(len(vps_arr), e.speech_s))
        change.append(e.fall_db - vp_falls)
        cond.append(np.full(len(vps_arr), c))
    flat = lambda parts: np.concatenate(parts)  # noqa: E731
    return Scored(flat(rows)[:, None], flat(target)[:, None], flat(speech),
                  np.zeros(len(flat(speech)), dtype=int), flat(change), flat(cond))


def clean_far(raw: dict) -> float | None:
    """The false-accept rate of the length thresholds on the clean calibration keywords, from a
    sidecar's SNR calibration (None without one)."""
    rows = ((raw.get("calibration") or {}).get("snr") or {}).get("by_condition") or []
    for r in rows:
        if r.get("condition") == "clean":
            return float(r["far_length"])
    return None


def by_condition(sc: Scored, decision, points) -> list[dict]:
    """Per condition: false accepts and rejects at the length thresholds alone, then with these
    offsets (on this material itself: a check, not a result)."""
    from dataclasses import replace

    with_fall = replace(decision, threshold_offsets_by_snr_db=(),
                        threshold_offsets_by_fall_change_db=tuple(map(tuple, points)))
    out = []
    for c in CONDITIONS:
        sel = sc.condition == c
        s, t = sc.scores[sel], sc.target[sel]
        base = np.array([decision.threshold_for(x) for x in sc.speech_s[sel]])[:, None]
        fall = np.array([with_fall.threshold_for(x, None, f) for x, f in
                         zip(sc.speech_s[sel], sc.snr_db[sel])])[:, None]
        out.append({"condition": c, "n_probes": int(sel.sum()),
                    "fall_change_db_median": float(np.median(sc.snr_db[sel])),
                    "far_length": float((s >= base)[~t].mean()),
                    "frr_length": float((s < base)[t].mean()),
                    "far_fall": float((s >= fall)[~t].mean()),
                    "frr_fall": float((s < fall)[t].mean())})
    return out


@user_errors("export.calibrate_fall")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.calibrate_fall", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="the shared data folder")
    ap.add_argument("--model", help="a shipped model's name or a path (default: the default)")
    ap.add_argument("--out", type=Path, default=Path("runs/fall"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speakers", type=int, default=None, help="use only the first N speakers")
    ap.add_argument("--bin-db", type=float, default=0.5, help="width of the change bins")
    ap.add_argument("--min-trials", type=int, default=100,
                    help="bins are merged until each has this many target and non-target scores")
    ap.add_argument("--dry-quantile", type=float, default=0.1,
                    help="no offset above this quantile of the dry probes' change (the change "
                         "dry speech itself spreads over; default %(default)s)")
    ap.add_argument("--max-far", type=float, default=None,
                    help="no bin lets more than this share of its impostor scores through "
                         "(default: the clean calibration keywords' rate from the sidecar, at "
                         f"most {MAX_FAR:g})")
    ap.add_argument("--write-sidecar", action="store_true")
    args = ap.parse_args(argv)

    model_path = resolve_model(args.model)
    session = EncoderSession(model_path, threads=1)
    scorer = Scorer.for_model(session)
    decision = session.info.decision
    if args.max_far is not None:
        max_far = args.max_far
    else:
        clean = clean_far(session.info.raw)
        if clean is None:
            ap.error("the sidecar holds no SNR calibration to take the false-accept cap from: "
                     "give --max-far")
        max_far = min(clean, MAX_FAR)
    n = len(speakers(args.root)) if args.speakers is None else args.speakers
    with progress_bar(sys.stderr.isatty(), "calibrating rooms", n) as advance:
        sc = collect(session, scorer, args.root, seed=args.seed, limit=args.speakers,
                     progress=advance)
    fit = offsets_by_snr(sc, decision, width_db=args.bin_db, min_trials=args.min_trials,
                         max_far=max_far)
    # dry speech itself spreads around its enrolment's figure: within that spread the estimate
    # cannot tell a room from the speech, so no offset there (the clean bins' own offsets are
    # the fit's noise: they let 2.6 % of dry impostors through for the default without this)
    dry_edge = round(float(np.quantile(sc.snr_db[sc.condition == "clean"], args.dry_quantile)), 1)
    fit["points"] = [p for p in fit["points"] if p[0] < dry_edge] + [[dry_edge, 0.0]]
    checks = by_condition(sc, decision, fit["points"])
    block = {
        "data": f"{int(sc.target.sum())} target pairs of LibriSpeech speakers outside the "
                f"dev lists: 3 x {TAKE_S:g} s dry enrolment takes, up to {MAX_PROBES} probes of "
                f"{PROBE_S:g} s dry, in a synthetic room (RT60 {RT60_S[0]:g}-{RT60_S[1]:g} s, "
                f"DRR {DRR_DB[0]:g}..{DRR_DB[1]:g} dB) and a shoebox room (RT60 "
                f"{SHOEBOX_RT60_S[0]:g}-{SHOEBOX_RT60_S[1]:g} s, 1-4 m), seed {args.seed}",
        "criterion": f"bins of the change in the runtime's fall_db from the speaker's "
                     f"voiceprint to the probe ({args.bin_db:g} dB per 10 ms, merged to >= "
                     f"{args.min_trials} target and non-target scores); EER threshold of (score "
                     f"- length threshold) per bin minus the dry probes' one, raised where "
                     f"needed to let at most {max_far:.4f} of the bin's impostor scores through "
                     "(the clean calibration keywords' false-accept rate, at most "
                     f"{MAX_FAR:g}, unless --max-far); "
                     f"monotone fit, clipped at 0, and 0 from the dry probes' "
                     f"{100 * args.dry_quantile:g}th percentile of change ({dry_edge:g}) up; the "
                     "runtime takes the lower of this offset and the SNR one",
        "reference": fit["reference"], "reference_eer": fit["reference_eer"],
        "by_fall_change": [{("fall_change_db" if k == "snr_db" else "fall_change_db_range"
                             if k == "snr_db_range" else k): v for k, v in r.items()}
                           for r in fit["table"]],
        "by_condition": checks}
    save_fit(args.out, "fall", fit["points"], block)
    print(f"{'change':>7} {'range':>13} {'targets':>7} {'others':>7} {'EER':>7} "
          f"{'off@EER':>8} {'FARcap':>8} {'fit':>8}  conditions")
    for r in fit["table"]:
        lo, hi = r["snr_db_range"]
        print(f"{r['snr_db']:>7.2f} {lo:>6.2f}-{hi:<6.2f} {r['n_target']:>7} {r['n_nontarget']:>7} "
              f"{100 * r['eer']:>6.2f}% {r['offset_eer']:>8.4f} {r['offset_far_cap']:>8.4f} "
              f"{r['offset_fit']:>8.4f}  "
              f"{' '.join(f'{k}:{v}' for k, v in sorted(r['conditions'].items()))}")
    print(f"\n{'condition':>10} {'change':>7} {'FAR before':>10} {'FRR before':>10} "
          f"{'FAR after':>10} {'FRR after':>10}")
    for r in checks:
        print(f"{r['condition']:>10} {r['fall_change_db_median']:>7.2f} {100 * r['far_length']:>9.2f}% "
              f"{100 * r['frr_length']:>9.2f}% {100 * r['far_fall']:>9.2f}% "
              f"{100 * r['frr_fall']:>9.2f}%")
    print(f"threshold_offsets_by_fall_change_db: {json.dumps(fit['points'])}")
    if args.write_sidecar:
        side = write_fit(model_path, session.info.raw, "fall", block,
                         threshold_offsets_by_fall_change_db=fit["points"])
        print(f"wrote the offsets into {side}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
