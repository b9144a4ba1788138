"""Training data: utterance lists, fixed speaker splits, audio cache, augmentation, windows.

Audio is read with the runtime's :class:`rtverify.io.sources.FileSource` (any format, resampled to
16 kHz mono) and spectrograms come from :func:`rtverify.core.features.mel_spectrogram`, so training
sees exactly what the runtime computes. Silence is cut with the runtime's own
:class:`rtverify.core.segmenter.Segmenter`, and a segment shorter than a window is zero-padded as
:class:`rtverify.core.encoder.SegmentEmbedder` pads it.

Speaker splits of Arabic Speech Commands (fixed for the whole project):

* ``train18``: the authors' 18 train speakers; ``train12`` the first 12 of them in sorted order
  (00000001 .. 00000020) and ``calib6`` the other 6, reserved for threshold calibration (the
  production encoder is never trained on them);
* ``val`` (6 speakers) for model selection; ``test`` (6) is never trained or selected on.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from rtverify.config import SAMPLE_RATE_HZ, FeatureConfig, SegmenterConfig, WindowConfig
from rtverify.core.encoder import short_view_inputs
from rtverify.core.features import mel_spectrogram
from rtverify.core.segmenter import Segmenter, SegmentAudio, SegmentEnd, SegmentStart
from rtverify.io.sources import FileSource

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO.parent / "shared" / "data"
ARABIC = DATA_ROOT / "arabic-speech-commands"
CACHE_DIR = REPO / "runs" / "cache"

CALIB6 = ("00000022", "00000023", "00000024", "00000027", "00000029", "00000030")
"""Arabic train speakers reserved for threshold calibration."""
AUDIO_EXTENSIONS = (".wav", ".flac")


@dataclass(frozen=True)
class Utterance:
    speaker: str
    path: Path


def from_folder(root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS
                ) -> list[Utterance]:
    """Every ``<root>/<speaker>/<utterance>.<wav|flac>``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    utts = [Utterance(p.parent.name, p) for p in sorted(root.glob("*/*"))
            if p.suffix.lower() in extensions and p.is_file()]
    if not utts:
        raise ValueError(f"{root}: no <speaker>/<utterance>.wav|flac files")
    return utts


def from_manifest(corpus: str | os.PathLike) -> list[Utterance]:
    """The utterances of a shared corpus folder's ``MANIFEST.tsv`` (paths relative to it)."""
    corpus = Path(corpus)
    manifest = corpus / "MANIFEST.tsv"
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not {"speaker", "path"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{manifest}: expected tab-separated columns 'speaker' and 'path' "
                             f"in its first line, got {reader.fieldnames}")
        utts = []
        for r in reader:
            if not r["speaker"] or not r["path"]:
                raise ValueError(f"{manifest}:{reader.line_num}: no speaker or path")
            utts.append(Utterance(r["speaker"], corpus / r["path"]))
    return utts


def arabic_splits(corpus: str | os.PathLike = ARABIC) -> dict[str, list[str]]:
    """Speaker ids of each split: ``train18``, ``train12``, ``calib6``, ``val``, ``test``."""
    with open(Path(corpus) / "SPLITS.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["split"], []).append(r["speaker"])
    train = sorted(by["train"])
    if not set(CALIB6) <= set(train):
        raise ValueError(f"{corpus}: calibration speakers {CALIB6} are not all train speakers")
    train12 = [s for s in train if s not in CALIB6]
    if train12 != train[:12]:
        raise ValueError(f"{corpus}: train12 is not the first 12 train speakers")
    return {"train18": train, "train12": train12, "calib6": list(CALIB6),
            "val": sorted(by["val"]), "test": sorted(by["test"])}


def extra_split(corpus: str | os.PathLike, every: int = 3) -> dict[str, list[str]]:
    """Speakers of an extra, unlabelled-for-us corpus folder (``<speaker>/<clip>`` with a
    ``MANIFEST.tsv``): every ``every``-th speaker in sorted order is ``held`` out of training
    (for dev lists and calibration), the rest are ``train``. Deterministic, so training and the
    lists built on the held-out part always agree."""
    speakers = sorted({u.speaker for u in from_manifest(corpus)})
    return {"train": [s for i, s in enumerate(speakers) if i % every != every - 1],
            "held": [s for i, s in enumerate(speakers) if i % every == every - 1]}


def select(utts: Iterable[Utterance], speakers: Iterable[str]) -> list[Utterance]:
    keep = set(speakers)
    return [u for u in utts if u.speaker in keep]


def dataset(spec: str) -> list[Utterance]:
    """Utterances named on the command line: ``arabic:<split>`` (``arabic:train12``), a shared
    corpus folder with a MANIFEST.tsv, or any ``<speaker>/<utterance>`` folder."""
    if spec.startswith("arabic:"):
        split = spec.split(":", 1)[1]
        splits = arabic_splits()
        if split not in splits:
            raise ValueError(f"{spec}: unknown split (choose from {', '.join(splits)})")
        return select(from_manifest(ARABIC), splits[split])
    path = Path(spec)
    if (path / "MANIFEST.tsv").is_file():
        return from_manifest(path)
    return from_folder(path)


# -- audio --------------------------------------------------------------------------------------
def load_audio(path: str | os.PathLike) -> np.ndarray:
    """A recording as float32 16 kHz mono, through the runtime's own source."""
    return np.concatenate([c.samples for c in FileSource(path)])


def speech_segments(audio: np.ndarray, cfg: SegmenterConfig = SegmenterConfig()
                    ) -> list[np.ndarray]:
    """The utterances the runtime's segmenter cuts out of ``audio`` (dropped bursts excluded)."""
    seg = Segmenter(cfg)
    n = seg.frame_samples
    out: list[np.ndarray] = []
    parts: list[np.ndarray] = []

    def handle(events):
        for ev in events:
            if isinstance(ev, SegmentStart):
                parts.clear()
            elif isinstance(ev, SegmentAudio):
                parts.append(ev.samples)
            elif isinstance(ev, SegmentEnd):
                if not ev.dropped and parts:
                    out.append(np.concatenate(parts))
                parts.clear()

    for i in range(len(audio) // n):
        handle(seg.push(audio[i * n:(i + 1) * n], i * n / SAMPLE_RATE_HZ))
    handle(seg.flush())
    return out


def speech_audio(audio: np.ndarray) -> np.ndarray:
    """The speech of a recording (its segments joined), or the whole of it if none is found."""
    segs = speech_segments(audio)
    return np.concatenate(segs) if segs else audio


def _stamp(path) -> str:
    """A recording's size and modification time: a file replaced under the same name is read
    again, not taken from the cache (as ``rtverify eval``'s cache does). A missing file is left
    for the reading to name."""
    from rtverify.evaluation import EmbeddingCache

    try:
        return EmbeddingCache.stamp(Path(path))
    except OSError:
        return "-"


@dataclass
class AudioBank:
    """Speech of every utterance in memory, grouped by speaker (float32, 16 kHz).

    Built once from the files (segmenter-trimmed) and cached as ``.npz`` under ``runs/cache``
    keyed by the file list and each file's size and modification time, so later runs start at
    once and a recording replaced under the same name is read again.
    """

    speakers: list[str]
    clips: list[list[np.ndarray]]
    """``clips[i]`` are the speech clips of ``speakers[i]``."""
    paths: list[list[str]] = field(default_factory=list)

    @classmethod
    def load(cls, utts: Sequence[Utterance], cache_dir: Path | None = CACHE_DIR,
             progress: bool = True) -> "AudioBank":
        utts = sorted(utts, key=lambda u: (u.speaker, str(u.path)))
        key = hashlib.sha256("\n".join(f"{u.speaker}\t{u.path}\t{_stamp(u.path)}" for u in utts
                                       ).encode()).hexdigest()[:16]
        cache = cache_dir / f"speech-{key}.npz" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            with np.load(cache) as z:
                flat, lengths = z["audio"], z["lengths"]
            audio = np.split(flat, np.cumsum(lengths)[:-1])
        else:
            audio = []
            it = utts
            if progress:
                from rich.progress import track

                it = track(utts, description="reading audio", transient=True)
            for u in it:
                audio.append(speech_audio(load_audio(u.path)).astype(np.float32))
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npz")
                np.savez(tmp, audio=np.concatenate(audio),
                         lengths=np.array([len(a) for a in audio]))
                os.replace(tmp, cache)
        speakers = sorted({u.speaker for u in utts})
        index = {s: i for i, s in enumerate(speakers)}
        clips: list[list[np.ndarray]] = [[] for _ in speakers]
        paths: list[list[str]] = [[] for _ in speakers]
        for u, a in zip(utts, audio):
            clips[index[u.speaker]].append(a)
            paths[index[u.speaker]].append(str(u.path))
        return cls(speakers, clips, paths)

    @classmethod
    def from_arrays(cls, by_speaker: dict[str, list[np.ndarray]]) -> "AudioBank":
        speakers = sorted(by_speaker)
        return cls(speakers, [list(by_speaker[s]) for s in speakers])


# -- augmentation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Random corruptions applied to each training clip (waveform, 16 kHz)."""

    gain_db: tuple[float, float] = (-20.0, 10.0)
    """Uniform gain range (decibels); the result is clipped to full scale."""
    p_noise: float = 0.5
    """Probability of additive noise."""
    snr_db: tuple[float, float] = (5.0, 30.0)
    """Uniform signal-to-noise ratio range of that noise (decibels)."""
    p_babble: float = 0.3
    """Share of the noise that is babble (other clips of the batch pool) instead of coloured."""
    p_band_limit: float = 0.2
    """Probability of telephone band-limiting (to 8 kHz sampling and back: nothing above 4 kHz)."""
    p_reverb: float = 0.15
    """Probability of convolving with a synthetic room response."""
    rt60_s: tuple[float, float] = (0.15, 0.6)
    """Reverberation time range of those rooms (seconds)."""

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(gain_db=(0.0, 0.0), p_noise=0.0, p_band_limit=0.0, p_reverb=0.0)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink-ish or brown-ish noise (one-pole low-pass of white noise)."""
    white = rng.standard_normal(n)
    pole = rng.choice([0.0, 0.7, 0.95])
    return white if pole == 0.0 else lfilter([1.0], [1.0, -pole], white)


def room_response(rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """Exponentially decaying noise tail after a direct path (a cheap synthetic RIR)."""
    n = int(rt60_s * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)  # -60 dB at rt60
    rir[0] = 1.0
    return rir / np.sqrt(np.sum(rir ** 2))


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            babble_pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One random corruption of clip ``x`` (float32 ``(n,)``); ``x`` itself is not changed."""
    y = x.astype(np.float64)
    if rng.random() < cfg.p_reverb:
        y = fftconvolve(y, room_response(rng, rng.uniform(*cfg.rt60_s)))[: len(y)]
    if rng.random() < cfg.p_band_limit:
        y = resample_poly(resample_poly(y, 1, 2), 2, 1)[: len(y)]
    if rng.random() < cfg.p_noise:
        if babble_pool and rng.random() < cfg.p_babble:
            noise = np.zeros(len(y))
            for _ in range(3):
                other = babble_pool[rng.integers(len(babble_pool))]
                noise += np.resize(other, len(y)) / np.sqrt(_power(other))
        else:
            noise = coloured_noise(len(y), rng)
        snr_db = rng.uniform(*cfg.snr_db)
        y = y + noise * np.sqrt(_power(y) / _power(noise) / 10 ** (snr_db / 10))
    y *= 10 ** (rng.uniform(*cfg.gain_db) / 20)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# -- windows ------------------------------------------------------------------------------------
def crop_window(rows: np.ndarray, rng: np.random.Generator | None, window_frames: int,
                short_views: Sequence[str] = ("end",)) -> np.ndarray:
    """One window of ``window_frames`` rows: a random crop of a longer spectrogram (the start
    if ``rng`` is None), or a shorter one presented as the runtime does (one of its
    ``short_views``: padded at the end or start, reflected, or as is), at random if ``rng`` is
    given, else the first view."""
    n = len(rows)
    if n >= window_frames:
        start = 0 if rng is None else int(rng.integers(n - window_frames + 1))
        return rows[start:start + window_frames]
    views = list(short_views)
    view = views[0] if rng is None else views[int(rng.integers(len(views)))]
    return short_view_inputs(rows, window_frames, [view])[0].astype(rows.dtype, copy=False)


def clip_window(clip: np.ndarray, rng: np.random.Generator, *, augment_cfg: AugmentConfig,
                features: FeatureConfig = FeatureConfig(), window: WindowConfig = WindowConfig(),
                babble_pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    """A training window (float32 ``(window_frames, n_mels)``) from one speech clip.

    Only the audio needed for a random window is augmented and analysed (a long clip is cut
    first), which keeps long LibriSpeech-like utterances cheap.
    """
    hop = features.hop_length
    need = (window.window_frames - 1) * hop
    if len(clip) > need:
        start = int(rng.integers(len(clip) - need + 1))
        clip = clip[start:start + need]
    rows = mel_spectrogram(augment(clip, rng, augment_cfg, babble_pool), features)
    return crop_window(rows, rng, window.window_frames, window.short_views)


class _CapturingSession:
    """Stands in for :class:`rtverify.core.encoder.EncoderSession` and records the windows the
    runtime embeds. Window ``k`` is "embedded" as the ``k``-th unit vector, so the pooled
    embedding the runtime computes from them is the weight of each window in its pooling (a
    segment shorter than a window counts once, the mean of its ``short_views``)."""

    def __init__(self, features: FeatureConfig, window: WindowConfig, dim: int = 8) -> None:
        from rtverify.config import DecisionConfig
        from rtverify.core.encoder import ModelInfo

        self.features, self.window, self.dim = features, window, dim
        self.info = ModelInfo("capture", features, window, DecisionConfig(threshold=0.5), dim, {})
        self.windows: list[np.ndarray] = []

    def streaming_features(self):
        from rtverify.core.encoder import streaming_features

        return streaming_features(self.features)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        k = len(self.windows)
        if k + len(frames) > self.dim:
            raise ValueError(f"more than {self.dim} windows in one recording")
        self.windows.extend(np.asarray(frames, dtype=np.float32))
        out = np.zeros((len(frames), self.dim), np.float32)
        out[np.arange(len(frames)), k + np.arange(len(frames))] = 1.0
        return out


def runtime_windows(path: str | os.PathLike, features: FeatureConfig = FeatureConfig(),
                    window: WindowConfig = WindowConfig()) -> tuple[list[np.ndarray], np.ndarray]:
    """Every window the runtime embeds for a recording in an evaluation, each float32
    ``(frames, n_mels)``, and its weight in the recording's embedding (float64 ``(n,)``): the
    embedding is ``l2_normalize(sum(weight * window embedding))``, as
    :func:`rtverify.evaluation.embed_file` pools it (VAD, streaming features, windowing; speech
    ``listen`` drops as too short is used when it is all there is). Both empty when the segmenter
    finds no speech at all: such a file has no embedding, and its trials score ``-inf``, as in
    ``rtverify eval``."""
    from rtverify.evaluation import embed_chunks

    audio = load_audio(path)
    rows = len(audio) // features.hop_length + 1
    # at most one window per hop of rows, plus the short views and tail of every segment
    cap = _CapturingSession(features, window, dim=3 * rows + 8)

    def source():
        cap.windows.clear()  # keep only the windows of the pass that gives the embedding
        return FileSource(path)

    vec = embed_chunks(cap, source, SegmenterConfig()).vector
    if np.isnan(vec).any():
        return [], np.zeros(0)
    weights = vec[:len(cap.windows)].astype(np.float64)
    return list(cap.windows), weights / weights.max()
