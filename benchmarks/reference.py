"""The reference encoder, resemblyzer's pretrained GE2E LSTM, run in its own process (it needs
torch, which the benchmark driver and rtverify never import).

    python -m benchmarks.reference time --audio FILE --threads N
        one JSON line: seconds for ``preprocess_wav`` (resample, volume, webrtcvad silence
        trimming), ``embed_utterance`` on its trimmed output and on the untouched audio.
    python -m benchmarks.reference embed --root DIR --files LIST --out NPZ --cache DIR
        one embedding per file (relative paths in LIST), resemblyzer's own pipeline:
        ``preprocess_wav(path)`` then ``embed_utterance``. A file that trimming empties entirely
        (the shortest FSDD digits) is embedded from its resampled, volume-normalised audio
        without trimming and counted as ``untrimmed``.

Threads: ``torch.set_num_threads(N)``; the caller also sets OMP/OPENBLAS variables to N.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _encoder(threads: int):
    import torch
    from resemblyzer import VoiceEncoder

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    return VoiceEncoder("cpu", verbose=False)


def cmd_time(args) -> dict:
    import resemblyzer
    import soundfile as sf
    import torch
    from resemblyzer import preprocess_wav

    x, rate = sf.read(args.audio, dtype="float32")
    if rate != 16000 or x.ndim != 1:
        raise SystemExit(f"{args.audio}: expected 16 kHz mono")
    enc = _encoder(args.threads)
    enc.embed_utterance(preprocess_wav(x[:5 * 16000]))  # warm-up: first-call allocations
    wall, cpu = {}, {}

    def timed(name, fn, *a):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*a)
        wall[name], cpu[name] = time.perf_counter() - t, time.process_time() - c
        return out

    trimmed = timed("preprocess", preprocess_wav, x)
    timed("embed_trimmed", enc.embed_utterance, trimmed)
    timed("embed_raw", enc.embed_utterance, x)
    return {"audio_s": len(x) / 16000, "trimmed_audio_s": len(trimmed) / 16000,
            **{f"{k}_s": v for k, v in wall.items()}, **{f"{k}_cpu_s": v for k, v in cpu.items()},
            "threads": args.threads, "torch": torch.__version__,
            "resemblyzer": getattr(resemblyzer, "__version__", "0.1.4")}


def cmd_embed(args) -> dict:
    import librosa
    from resemblyzer import preprocess_wav
    from resemblyzer.audio import normalize_volume
    from resemblyzer.hparams import audio_norm_target_dBFS, sampling_rate

    from rtverify.evaluation import EmbeddingCache

    root = Path(args.root)
    files = [line.strip() for line in Path(args.files).read_text().splitlines() if line.strip()]
    # speech_s: seconds left after resemblyzer's trimming; short_only: trimming left nothing
    store = EmbeddingCache(Path(args.cache), "resemblyzer-0.1.4-preprocess-embed_utterance-2")
    enc = None
    vectors = np.zeros((len(files), 256), np.float32)
    untrimmed = []
    t0 = time.perf_counter()
    for i, rel in enumerate(files):
        path = root / rel
        hit = store.get(path)
        if hit is None:
            enc = enc or _encoder(args.threads)
            wav = preprocess_wav(path)
            speech_s, untrimmed_file = len(wav) / sampling_rate, len(wav) == 0
            if untrimmed_file:
                raw, sr = librosa.load(str(path), sr=None)
                wav = normalize_volume(librosa.resample(raw, orig_sr=sr, target_sr=sampling_rate),
                                       audio_norm_target_dBFS, increase_only=True)
            hit = (enc.embed_utterance(wav).astype(np.float32), speech_s, untrimmed_file)
            store.put(path, *hit)
            if i % 500 == 499:
                store.save()
        vectors[i] = hit[0]
        if hit[2]:
            untrimmed.append(rel)
    store.save()
    np.savez(args.out, files=np.array(files), vectors=vectors)
    return {"files": len(files), "untrimmed": len(untrimmed),
            "untrimmed_examples": untrimmed[:5], "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--audio", required=True)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("embed")
    e.add_argument("--root", required=True)
    e.add_argument("--files", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--cache", required=True)
    e.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    result = cmd_time(args) if args.cmd == "time" else cmd_embed(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
