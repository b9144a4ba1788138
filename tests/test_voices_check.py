"""``tools.voices_check`` end to end on a made-up corpus cut from the demo's LibriSpeech voices."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from conftest import DEMO, SR, read16k


def test_voices_check_counts_refusals(tmp_path, demo):
    from tools import voices_check

    conv = read16k(DEMO / demo["conversation"])
    lines: dict[str, list[np.ndarray]] = {}
    for ln in demo["script"]:
        lines.setdefault(ln["speaker"], []).append(
            conv[int(ln["start_s"] * SR):int(ln["end_s"] * SR)])
    enrolled = demo["enrolled_speaker"]
    voices = {enrolled: np.concatenate([read16k(DEMO / f) for f in demo["enroll"]])}
    for who, parts in lines.items():
        if who != enrolled:  # one 4 s line each: said twice, to make 8 s
            voices[who] = np.concatenate(parts * 2)
    corpus = tmp_path / "librispeech-clean100-251spk"
    rows = ["speaker\tpath\tduration_s\tsample_rate"]
    for who, x in voices.items():
        (corpus / who).mkdir(parents=True)
        sf.write(corpus / who / f"{who}-0.flac", x, SR)
        rows.append(f"{who}\t{who}/{who}-0.flac\t{len(x) / SR:.3f}\t{SR}")
    (corpus / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.json"
    assert voices_check.main(["--data", str(tmp_path), "--mixtures", "2", "--kinds",
                              "2_speakers,3_whole", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["one_speaker"] == {"n": 4, "refused": 0}
    assert got["2_speakers"]["n"] == 2 and got["3_whole"]["n"] == 2
    assert got["3_whole"]["refused"] == 2  # three different people, each 8 s
    assert "5_whole" not in got
