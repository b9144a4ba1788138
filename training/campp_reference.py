"""Write the CAM++ reference embedding the tests check against (run once, result committed).

    python -m training.campp_reference   # -> tests/data/campp_ref_espeak_enroll_1.npy

Whole-utterance torch CAM++ (``training.campp.embed_utterance``) of ``tests/data/espeak_enroll_1.flac``,
L2-normalised, float32 (192,).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.campp import embed_utterance, load_campp

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "data" / "espeak_enroll_1.flac"
OUT = ROOT / "tests" / "data" / "campp_ref_espeak_enroll_1.npy"


def main() -> None:
    from rtverify.io.sources import FileSource

    torch.set_num_threads(1)
    x = np.concatenate([c.samples for c in FileSource(AUDIO)])
    e = embed_utterance(load_campp(), x).numpy()
    np.save(OUT, (e / np.linalg.norm(e)).astype(np.float32))
    print(f"{OUT}: norm of raw embedding {np.linalg.norm(e):.3f}")


if __name__ == "__main__":
    main()
