"""Benchmarks of rtverify: accuracy, throughput, latency, start-up and memory, side by side with
the reference encoder (resemblyzer's pretrained GE2E LSTM) in the same run on the same audio.

``python -m benchmarks run`` is the one command; see ``benchmarks/README.md``. Nothing here is
imported by the runtime.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The checkout the benchmarks measure."""
DATA = REPO.parent / "shared" / "data"
"""The speech corpora (``../shared/data`` from the checkout); override with ``--data``."""
CACHE = Path(__file__).resolve().parent / "cache"
"""Git-ignored: the long recording and cached embeddings."""
