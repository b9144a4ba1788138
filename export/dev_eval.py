"""Run ``rtverify eval`` on the shared and dev lists and write a sidecar ``dev_eval`` block.

    python -m export.dev_eval --model campp --out runs/eval/campp-dev_eval.json [--dev runs/dev]

Shared lists: ``../shared/data/trials/*.txt``; dev lists (``training.dev_lists``):
``<dev>/{clean,babble5,reverb,tel8k,shoebox}-2s.txt``, ``<dev>/clean-1s.txt``, the 3-take
voiceprint lists ``<dev>/{clean,clean1s,babble5,reverb,tel8k,shoebox}-vp3.txt`` and
``<dev>/librispeech-heldout-3s.txt``.
The result is ``{"dev_eval": {...}}``, for ``--extra`` of the exporters.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from training.cli import user_errors

SHARED = ("librispeech-251-3s", "arabic-test-1s", "arabic-val-1s", "fsdd-8k")
DEV = ("clean-2s", "clean-1s", "babble5-2s", "reverb-2s", "tel8k-2s", "shoebox-2s",
       "clean-vp3", "clean1s-vp3", "babble5-vp3", "reverb-vp3", "tel8k-vp3", "shoebox-vp3")


def lists(data: Path, dev: Path):
    for name in SHARED:
        yield name, data / "trials" / f"{name}.txt", data
    for name in DEV:
        yield f"dev-{name}", dev / f"{name}.txt", dev
    yield "dev-librispeech-heldout-3s", dev / "librispeech-heldout-3s.txt", data


@user_errors("export.dev_eval")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--dev", type=Path, default=Path("runs/dev"))
    ap.add_argument("--cache", type=Path, default=Path("runs/evalcache"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--write-sidecar", action="store_true",
                    help="also put the figures into the model's sidecar (dev_eval), keeping each "
                         "list's reference figures")
    args = ap.parse_args(argv)
    block = {"command": f"rtverify eval --model {args.model} --trials LIST --root ROOT --json",
             "scoring": "cosine of pooled file embeddings through the runtime path",
             "lists": {}}
    for name, trials, root in lists(args.data, args.dev):
        out = subprocess.run([sys.executable, "-m", "rtverify", "eval", "--model", args.model,
                              "--trials", str(trials), "--root", str(root), "--json",
                              "--cache", str(args.cache)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: {out.stderr.strip()}", file=sys.stderr)
            return 1
        d = json.loads(out.stdout)
        block["lists"][name] = {k: (round(d[k], 4) if isinstance(d[k], float) else d[k]) for k in
                                ("eer", "min_dcf", "accuracy_at_eer", "accuracy_at_model_threshold",
                                 "far_at_model_threshold", "frr_at_model_threshold",
                                 "snr_db_median", "trials", "files_without_speech",
                                 "files_short_speech_only")}
        print(f"{name:28s} EER {100 * d['eer']:6.2f} %  minDCF {d['min_dcf']:.4f}  "
              f"acc@model thr {d['accuracy_at_model_threshold']:.4f}  FAR "
              f"{100 * d['far_at_model_threshold']:6.2f} %  FRR "
              f"{100 * d['frr_at_model_threshold']:6.2f} %", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dev_eval": block}, indent=1) + "\n")
    if args.write_sidecar:
        side = write_dev_eval(args.model, block)
        print(f"wrote the dev_eval block into {side}")
    return 0


def write_dev_eval(model: str, block: dict) -> Path:
    """Put ``block`` into the model's sidecar as ``dev_eval``, keeping what was there and is not
    measured here: other lists, and each list's reference figures (``reference_*``, measured
    with other tools: resemblyzer's pipeline, the torch whole-file model)."""
    from rtverify.core.encoder import EncoderSession, sidecar_path

    from .calibrate import write_sidecar

    path = EncoderSession(model).path
    old = json.loads(sidecar_path(path).read_text(encoding="utf-8")).get("dev_eval") or {}
    lists = dict(old.get("lists", {}))
    for name, figures in block["lists"].items():
        kept = {k: v for k, v in lists.get(name, {}).items() if k.startswith("reference_")}
        lists[name] = {**figures, **kept}
    return write_sidecar(path, dev_eval={**old, **block, "lists": lists})


if __name__ == "__main__":
    raise SystemExit(main())
