"""Build the bundled demo/test recordings from ../shared/data (LibriSpeech, CC BY 4.0).

The enrolled speaker ("alice" in the demo) is LibriSpeech speaker 198; the others are 8770, 229
and 3374. Enrolment takes come from the first half of speaker 198's utterance, her lines in the
conversation from the second half, so the demo never scores audio it enrolled with.

    python tools/make_demo_bundle.py [--data ../shared/data] [--out rtverify/demo]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
ENROLLED = "198"
OTHERS = ["8770", "229", "3374"]


def quiet_point(x: np.ndarray, around_s: float, search_s: float = 0.6) -> int:
    """Sample index of the quietest 50 ms near ``around_s`` (a pause between words)."""
    a, b = int((around_s - search_s) * SR), int((around_s + search_s) * SR)
    hop = SR // 100
    win = np.lib.stride_tricks.sliding_window_view(x[a:b] ** 2, 5 * hop)[::hop].mean(axis=1)
    return a + int(np.argmin(win)) * hop + 5 * hop // 2


def trim_silence(x: np.ndarray, level_db: float = -45.0) -> np.ndarray:
    hop = SR // 100
    e = 10 * np.log10(np.lib.stride_tricks.sliding_window_view(x ** 2, hop)[::hop].mean(1) + 1e-12)
    on = np.flatnonzero(e > level_db)
    return x[max(0, on[0] * hop - SR // 20): min(len(x), (on[-1] + 1) * hop + SR // 20)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="rtverify/demo")
    args = ap.parse_args()
    root = Path(args.data) / "librispeech-clean100-251spk"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def utt(spk):
        (f,) = sorted((root / spk).glob("*.flac"))
        x, sr = sf.read(f, dtype="float32")
        assert sr == SR
        return f.stem, trim_silence(x)

    name, a = utt(ENROLLED)
    c1 = quiet_point(a, 4.5)
    c2 = quiet_point(a, 9.0)
    c3 = quiet_point(a, 13.0)
    sf.write(out / "enroll_1.flac", a[:c1], SR)
    sf.write(out / "enroll_2.flac", a[c1:c2], SR)
    lines = [(ENROLLED, a[c2:c3])]
    for spk in OTHERS:
        _, x = utt(spk)
        lines.append((spk, x[: quiet_point(x, 4.0)]))
    lines.insert(2, (ENROLLED, a[c3:]))
    order = [lines[0], lines[1], lines[3], lines[2], lines[4]]  # 198, 8770, 229, 198, 3374

    rng = np.random.default_rng(198)
    pause = np.zeros(int(1.2 * SR), dtype=np.float32)
    parts, script, t = [pause], [], len(pause) / SR
    for spk, x in order:
        parts += [x, pause]
        script.append({"speaker": spk, "start_s": round(t, 3), "end_s": round(t + len(x) / SR, 3)})
        t += (len(x) + len(pause)) / SR
    conv = np.concatenate(parts)
    conv = conv + rng.normal(0, 10 ** (-65 / 20), len(conv)).astype(np.float32)  # room noise
    sf.write(out / "conversation.flac", conv.astype(np.float32), SR)
    meta = {"enrolled_speaker": ENROLLED, "enroll": ["enroll_1.flac", "enroll_2.flac"],
            "conversation": "conversation.flac", "script": script,
            "source": "LibriSpeech train-clean-100 (Panayotov et al., 2015), CC BY 4.0: "
                      f"{name} and the first utterances of speakers {', '.join(OTHERS)}; "
                      "cut, concatenated, with -65 dBFS white noise added."}
    (out / "conversation.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
