"""Degradations for distillation and for the noisy/reverberant dev lists (numpy/scipy only).

Each function takes float32 16 kHz mono samples at full scale 1.0 and returns a new array of the
same length; nothing is changed in place.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

RATE_HZ = 16000


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2)) + 1e-12


def _finish(y: np.ndarray) -> np.ndarray:
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` (tiled/cut to its length) scaled to ``snr_db`` below it."""
    noise = np.resize(np.asarray(noise, dtype=np.float64), len(x))
    return _finish(x + noise * np.sqrt(_power(x) / _power(noise) / 10 ** (snr_db / 10)))


def babble_noise(talkers: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of the given talkers' speech (each tiled from a random offset, equal power), ``n`` long."""
    out = np.zeros(n)
    for t in talkers:
        t = np.asarray(t, dtype=np.float64)
        start = int(rng.integers(len(t)))
        out += np.resize(np.roll(t, -start), n) / np.sqrt(_power(t))
    return out


def room_response(rng: np.random.Generator, rt60_s: float, drr_db: float) -> np.ndarray:
    """A synthetic room impulse response: a direct path, then exponentially decaying noise
    (-60 dB at ``rt60_s``) whose energy is ``drr_db`` below the direct path's (far field:
    negative values). Unit energy."""
    n = int(rt60_s * RATE_HZ)
    t = np.arange(1, n) / RATE_HZ
    tail = rng.standard_normal(n - 1) * np.exp(-6.9 * t / rt60_s)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    rir = np.concatenate([[1.0], tail])
    return rir / np.sqrt(np.sum(rir ** 2))


def reverb(x: np.ndarray, rng: np.random.Generator, rt60_s=(0.5, 0.8), drr_db=(-6.0, 0.0)
           ) -> np.ndarray:
    rir = room_response(rng, rng.uniform(*rt60_s), rng.uniform(*drr_db))
    y = fftconvolve(np.asarray(x, dtype=np.float64), rir)[: len(x)]
    return _finish(y * np.sqrt(_power(x) / _power(y)))


def shoebox_response(rng: np.random.Generator, rt60_s=(0.3, 0.8), distance_m=(1.0, 4.0)
                     ) -> np.ndarray:
    """A simulated room's impulse response (``pyroomacoustics``, image source method): a
    shoebox of 4-9 x 3-7 x 2.5-3.5 m whose walls absorb as Sabine's formula gives for an RT60
    drawn from ``rt60_s``, a microphone somewhere inside and the talker ``distance_m`` away at
    head height. Unit energy, float64. (Needs the ``train`` extra.)"""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(4, 9), rng.uniform(3, 7), rng.uniform(2.5, 3.5)])
    rt60 = rng.uniform(*rt60_s)
    absorption, order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=RATE_HZ, materials=pra.Material(absorption),
                       max_order=int(min(order, 40)), ray_tracing=False, air_absorption=True)
    margin = 0.5
    for _ in range(100):  # a talker position inside the room at the drawn distance
        mic = np.array([rng.uniform(margin, d - margin) for d in dims[:2]] +
                       [rng.uniform(0.7, 1.5)])
        dist = rng.uniform(*distance_m)
        angle = rng.uniform(0, 2 * np.pi)
        src = mic + np.array([dist * np.cos(angle), dist * np.sin(angle), 0.0])
        src[2] = rng.uniform(1.4, 1.8)
        if all(margin <= src[k] <= dims[k] - margin for k in range(3)):
            break
    else:
        src = dims / 2
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return rir / np.sqrt(np.sum(rir ** 2))


def convolve_room(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` heard through the impulse response ``rir`` (its level kept; the direct path's
    delay removed, so the speech stays where it was)."""
    start = int(np.argmax(np.abs(rir)))
    y = fftconvolve(np.asarray(x, dtype=np.float64), rir[max(0, start - 16):])[: len(x)]
    return _finish(y * np.sqrt(_power(x) / _power(y)))


def telephone(x: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back (nothing above 4 kHz)."""
    return _finish(resample_poly(resample_poly(np.asarray(x, dtype=np.float64), 1, 2), 2, 1)[: len(x)])


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    pole = rng.choice([0.0, 0.7, 0.95])
    return white if pole == 0.0 else lfilter([1.0], [1.0, -pole], white)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Resampled by ``factor`` (pitch and tempo together), cut or zero-padded to the length."""
    up = int(round(100 * factor))
    y = resample_poly(np.asarray(x, dtype=np.float64), 100, up)
    return _finish(np.resize(y, len(x)) if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y))))


def tilt(x: np.ndarray, a: float) -> np.ndarray:
    """A first-order spectral tilt at the same power: ``a > 0`` lifts the highs against the lows
    (as raised vocal effort does: shouting, anger), ``a < 0`` the lows (a soft, tired voice)."""
    y = lfilter([1.0, -a], [1.0], np.asarray(x, dtype=np.float64))
    return _finish(y * np.sqrt(_power(x) / max(_power(y), 1e-20)))


def prosody(x: np.ndarray, rng: np.random.Generator, semitones=(-4.0, 7.0), range_factor=(0.6, 2.0),
            duration=(0.85, 1.2)) -> np.ndarray:
    """The same voice speaking otherwise, as emotion changes it: the median pitch moved by
    ``semitones``, its range scaled by ``range_factor`` and the tempo by 1 / ``duration``, with
    the formants (the vocal tract) kept, by Praat's PSOLA resynthesis of a Manipulation (pitch
    kept within 60-450 Hz: Praat's "Change gender" can hang on high voices;
    ``praat-parselmouth``, a training extra). Cut or tiled back to the length; ``x`` unchanged
    when Praat finds no voiced frame."""
    import parselmouth
    from parselmouth.praat import call

    shift, spread, stretch = (rng.uniform(*semitones), rng.uniform(*range_factor),
                              rng.uniform(*duration))  # drawn first: the same draws either way
    snd = parselmouth.Sound(np.asarray(x, dtype=np.float64), RATE_HZ)
    try:
        median = call(snd.to_pitch(), "Get quantile", 0, 0, 0.5, "Hertz")
        if not np.isfinite(median) or median <= 0:
            return _finish(np.asarray(x, dtype=np.float64))
        man = call(snd, "To Manipulation", 0.01, 75, 600)
        tier = call(man, "Extract pitch tier")  # every pitch point: moved, its spread scaled
        call(tier, "Formula", f"min(450, max(60, {median * 2 ** (shift / 12)} * "
                              f"(self / {median}) ^ {spread}))")
        call([tier, man], "Replace pitch tier")
        dur = call(man, "Extract duration tier")
        call(dur, "Add point", 0.0, stretch)
        call([man, dur], "Replace duration tier")
        y = call(man, "Get resynthesis (overlap-add)").values[0]
    except parselmouth.PraatError:  # too little voicing for a manipulation: left as it was
        return _finish(np.asarray(x, dtype=np.float64))
    return _finish(np.resize(y, len(x)) if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)),
                                                                          mode="wrap"))


def random_degrade(x: np.ndarray, rng: np.random.Generator,
                   babble_pool: Sequence[np.ndarray],
                   rooms: Sequence[np.ndarray] = (), p_tilt: float = 0.0,
                   p_prosody: float = 0.0) -> np.ndarray:
    """One random mixture of the conditions the student must learn to ignore (for distillation):
    speed 0.9-1.1 (p 0.3), room (p 0.5, RT60 0.2-0.9 s, DRR -8..+6 dB), babble of 2-5 other
    talkers (p 0.45) or coloured noise (p 0.25) at 0-20 dB SNR, telephone band (p 0.15), level
    -25..+5 dB. With ``rooms`` (impulse responses of :func:`shoebox_response`), half the rooms
    are one of those simulated rooms instead. With ``p_tilt``, that share of windows first gets
    a spectral tilt (:func:`tilt`, ``a`` in -0.5..0.7: vocal effort; nothing is drawn without
    it, so runs without it repeat). With ``p_prosody``, that share first gets another pitch,
    pitch range and tempo (:func:`prosody`: emotion; likewise nothing drawn without it)."""
    y = np.asarray(x, dtype=np.float32)
    if p_prosody > 0 and rng.random() < p_prosody:
        y = prosody(y, rng)
    if p_tilt > 0 and rng.random() < p_tilt:
        y = tilt(y, rng.uniform(-0.5, 0.7))
    if rng.random() < 0.3:
        y = speed(y, rng.uniform(0.9, 1.1))
    if rng.random() < 0.5:
        if len(rooms) and rng.random() < 0.5:
            y = convolve_room(y, rooms[int(rng.integers(len(rooms)))])
        else:
            y = reverb(y, rng, (0.2, 0.9), (-8.0, 6.0))
    u = rng.random()
    if u < 0.45 and len(babble_pool) >= 2:
        k = int(rng.integers(2, min(5, len(babble_pool)) + 1))
        talkers = [babble_pool[i] for i in rng.choice(len(babble_pool), k, replace=False)]
        y = mix_at_snr(y, babble_noise(talkers, len(y), rng), rng.uniform(0, 20))
    elif u < 0.7:
        y = mix_at_snr(y, coloured_noise(len(y), rng), rng.uniform(0, 20))
    if rng.random() < 0.15:
        y = telephone(y)
    return _finish(y * 10 ** (rng.uniform(-25, 5) / 20))
