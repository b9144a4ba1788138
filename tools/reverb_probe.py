"""How well the runtime's reverberation estimate (:func:`rtverify.core.scoring.fall_db`) tells
reverberant from dry speech, on the dev lists and on the calibration keywords.

    .venv/bin/python -m tools.reverb_probe [--data ../shared/data] [--dev runs/dev]

The estimate, on the LSTM's mel power rows of a whole recording: per band (centred 250-3800 Hz),
the level change in dB per 10 ms from the rows louder than the band's median, its 3rd
percentile (the steepest falls); the median over bands, sign turned. A room's reverberation
bounds how fast a band can fall (60 dB per RT60), dry speech stops abruptly. Printed: its
median (10th-90th percentiles) and how well it separates clean from each condition (AUC, the
chance that a clean recording reads higher) on the dev lists' 2 s probes of the held-out
LibriSpeech speakers (``runs/dev``, ``python -m training.dev_lists``), and on the calib6
calibration keywords heard clean, reverberated (``training.degrade``: synthetic RT60 0.5-0.8 s
and 0.2-0.4 s, pyroomacoustics shoebox rooms) and in coloured noise at 10 dB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def steepest_fall_db(samples: np.ndarray) -> float:
    """:func:`rtverify.core.scoring.fall_db` of a 16 kHz recording's mel rows (NaN: none)."""
    from rtverify.core.features import FeatureConfig, mel_spectrogram
    from rtverify.core.scoring import fall_db

    out = fall_db(mel_spectrogram(samples), FeatureConfig())
    return float("nan") if out is None else out


def auc(a, b) -> float:
    """P(a random value of ``a`` is above one of ``b``)."""
    a, b = np.asarray(a)[:, None], np.asarray(b)[None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


def spread(v) -> str:
    v = np.asarray(v)
    return f"{np.median(v):6.2f} ({np.percentile(v, 10):.2f} .. {np.percentile(v, 90):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dev", type=Path, default=Path("runs/dev"))
    ap.add_argument("--speakers", type=int, default=60)
    args = ap.parse_args(argv)

    import soundfile as sf

    from export.calibrate import CALIB6, Material
    from training import degrade

    conds = ["clean", "reverb", "shoebox", "babble5", "tel8k"]
    got: dict[str, list[float]] = {c: [] for c in conds}
    speakers = sorted(p.name for p in (args.dev / "clean").iterdir())[:args.speakers]
    for s in speakers:
        for i in range(2):
            for c in conds:
                path = args.dev / c / s / f"{s}_{i}.flac"
                if not path.is_file():
                    continue
                x, rate = sf.read(path, dtype="float32")
                if rate == 16000:  # the estimate reads 16 kHz mel rows
                    got[c].append(steepest_fall_db(x))
    print(f"dev 2 s probes, {len(speakers)} held-out LibriSpeech speakers (fall_db, dB per 10 ms):")
    for c in conds:
        if got[c]:
            sep = "" if c == "clean" else f"   AUC clean vs it {auc(got['clean'], got[c]):.3f}"
            print(f"  {c:9s} {spread(got[c])}{sep}")

    rng = np.random.default_rng(0)
    calib: dict[str, list[float]] = {}
    for s in CALIB6:
        m = Material(args.data, s)
        for g in (1, 2, 4, 8):
            for _ in range(4):
                pick = rng.choice(len(m.test), g, replace=False)
                x = m.audio([m.test[i] for i in pick]).astype(np.float32)
                versions = {
                    "clean": x, "reverb": degrade.reverb(x, rng),
                    "reverb-short": degrade.reverb(x, rng, rt60_s=(0.2, 0.4), drr_db=(0, 6)),
                    "shoebox": degrade.convolve_room(x, degrade.shoebox_response(rng)),
                    "coloured10": degrade.mix_at_snr(x, degrade.coloured_noise(len(x), rng), 10)}
                for c, y in versions.items():
                    calib.setdefault(c, []).append(steepest_fall_db(y))
    print("calib6 keywords, 1-8 per recording (fall_db, dB per 10 ms):")
    for c, v in calib.items():
        sep = "" if c == "clean" else f"   AUC clean vs it {auc(calib['clean'], v):.3f}"
        print(f"  {c:12s} {spread(v)}{sep}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
