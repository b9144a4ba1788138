"""The long recording the speed benchmarks run on, built deterministically from real speech.

LibriSpeech utterances (``librispeech-clean100-251spk``, sorted by path) are laid end to end with
pauses between them whose lengths come from a seeded generator (0.2 to 2.5 s: some shorter than
the segmenter's ``pause_ms``, so they stay inside an utterance, most longer), over a -65 dBFS
white-noise bed (also seeded) so the pauses are not digital silence. The result is written as
16-bit PCM WAV (cheap to decode: the benchmark measures the pipeline, not FLAC) under the
git-ignored cache, and rebuilt only when missing or when its recipe changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
RECIPE = {"corpus": "librispeech-clean100-251spk", "min_speech_s": 600.0, "pause_s": [0.2, 2.5],
          "noise_dbfs": -65.0, "seed": 6, "version": 1}


def build_long_recording(data: Path, cache: Path, minutes: float | None = None) -> Path:
    """Return the path of the long recording (built if needed).

    :param data: the shared data folder (holding ``librispeech-clean100-251spk``).
    :param cache: folder to write it to.
    :param minutes: at least this much speech (default: the recipe's 10 minutes).
    """
    recipe = dict(RECIPE)
    if minutes is not None:
        recipe["min_speech_s"] = float(minutes) * 60.0
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    out = cache / f"long_{int(recipe['min_speech_s'])}s_{key}.wav"
    meta = out.with_suffix(".json")
    if out.is_file() and meta.is_file():
        return out
    corpus = data / recipe["corpus"]
    files = sorted(corpus.glob("*/*.flac"))
    if not files:
        raise FileNotFoundError(f"{corpus}: no .flac files (is the shared data folder there?)")
    rng = np.random.default_rng(recipe["seed"])
    lo, hi = recipe["pause_s"]
    parts, used, speech_s = [], [], 0.0
    for f in files:
        x, rate = sf.read(f, dtype="float32")
        if rate != SR or x.ndim != 1:
            raise ValueError(f"{f}: expected 16 kHz mono, got {rate} Hz, shape {x.shape}")
        parts.append(np.zeros(int(rng.uniform(lo, hi) * SR), dtype=np.float32))
        parts.append(x)
        used.append(str(f.relative_to(data)))
        speech_s += len(x) / SR
        if speech_s >= recipe["min_speech_s"]:
            break
    parts.append(np.zeros(int(hi * SR), dtype=np.float32))
    y = np.concatenate(parts)
    y += rng.normal(0.0, 10 ** (recipe["noise_dbfs"] / 20), len(y)).astype(np.float32)
    y = np.clip(y, -1.0, 1.0)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.wav")
    sf.write(tmp, y, SR, subtype="PCM_16")
    tmp.replace(out)
    meta.write_text(json.dumps({"recipe": recipe, "duration_s": len(y) / SR,
                                "utterances_s": speech_s, "files": used}, indent=1))
    return out


def load(path: Path) -> np.ndarray:
    """The recording as float32 samples (what the reference encoder is given)."""
    x, rate = sf.read(path, dtype="float32")
    if rate != SR:
        raise ValueError(f"{path}: expected {SR} Hz, got {rate}")
    return x


def ten_second_file(data: Path, cache: Path) -> Path:
    """The first 10 s of the first LibriSpeech utterance at least that long (16-bit WAV)."""
    out = cache / "ten_s.wav"
    if out.is_file():
        return out
    for f in sorted((data / RECIPE["corpus"]).glob("*/*.flac")):
        x, rate = sf.read(f, dtype="float32")
        if len(x) >= 10 * rate:
            cache.mkdir(parents=True, exist_ok=True)
            sf.write(out, x[:10 * rate], rate, subtype="PCM_16")
            return out
    raise FileNotFoundError(f"{data / RECIPE['corpus']}: no utterance of 10 s or more")
