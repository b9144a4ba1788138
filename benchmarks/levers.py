"""Each speed lever measured on its own, interleaved, in-process (``probe pipeline``: FileSource
-> Verifier, no process start, no JSON output):

- the segmenter/front-end speed work: the code before it (``--baseline``, a commit exported
  with ``git archive`` into the cache) against this checkout, with a no-cost stand-in for the
  encoder (what remains is the pipeline's own overhead: reading, VAD, features, windows);
- reading the file in 1 s blocks instead of FileSource's default 0.1 s (a CLI/sources choice);
- onnxruntime session options (``probe ort-options``).

The hop and int8 levers are model variants, measured through the real CLI in the throughput section.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import CACHE, REPO
from .runner import env_for, run

BASELINE_DEFAULT = "3a251df"
""""Encoder session, scoring, streaming Verifier": the pipeline before the speed work."""


def baseline_tree(ref: str) -> Path:
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
    out = CACHE / f"baseline-{sha[:12]}"
    if not (out / "rtverify").is_dir():
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    bench = out / "benchmarks"
    bench.mkdir(exist_ok=True)
    for name in ("__init__.py", "probe.py"):  # the probe, run against the old runtime
        shutil.copyfile(REPO / "benchmarks" / name, bench / name)
    return out


def _probe(tree: Path, audio: Path, extra: list[str]) -> float:
    r = run([sys.executable, "-m", "benchmarks.probe", "pipeline", "--input", str(audio), *extra],
            env=env_for(1), cwd=tree).check()
    return json.loads(r.lines[-1][1])["seconds"]


def levers(audio: Path, audio_s: float, reps: int, baseline: str | None, log=print) -> dict:
    configs = []
    if baseline:
        base = baseline_tree(baseline)
        # its own code with its own shipped model: a later sidecar may hold fields the old code
        # cannot read, so only the pipeline's overhead (no encoder) is compared with it
        configs += [(f"before speed work ({baseline}), no encoder", base, ["--no-encoder"])]
    configs += [("this checkout, no encoder", REPO, ["--no-encoder"]),
                ("this checkout", REPO, []),
                ("this checkout, 1 s read blocks, no encoder", REPO,
                 ["--no-encoder", "--block-ms", "1000"]),
                ("this checkout, 1 s read blocks", REPO, ["--block-ms", "1000"])]
    times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for rep in range(reps):
        for name, tree, extra in (configs if rep % 2 == 0 else configs[::-1]):
            times[name].append(_probe(tree, audio, extra))
        log(f"  levers rep {rep + 1}/{reps}: " + ", ".join(
            f"{n} {times[n][-1]:.2f} s" for n, _, _ in configs))
    pipeline = {n: {"seconds": float(np.median(t)), "x_realtime": audio_s / float(np.median(t)),
                    "each": t} for n, t in times.items()}
    r = run([sys.executable, "-m", "benchmarks.probe", "ort-options", "--input", str(audio)],
            env=env_for(2)).check()
    return {"audio": str(audio), "audio_s": audio_s, "reps": reps, "baseline": baseline,
            "pipeline": pipeline, "ort_options": json.loads(r.lines[-1][1])}
