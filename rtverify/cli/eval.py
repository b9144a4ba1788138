"""``rtverify eval``: its arguments, parsed here and only here, then handed as plain values to
:func:`rtverify.evaluation.run_eval`. Building the parser imports nothing heavy (``rtverify
--help`` stays fast): :mod:`rtverify.evaluation` is imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "eval", help="EER, minDCF and accuracy on a trials list",
        description="Embed every file of a trials list through the live pipeline (VAD, "
                    "features, windows) and report EER, minDCF (p_target 0.01) and accuracy.",
        epilog="example: rtverify eval --trials ../shared/data/trials/arabic-test-1s.txt "
               "--root ../shared/data --json")
    p.add_argument("--trials", required=True, type=Path,
                   help="lines 'label path_a path_b' (1 = same speaker; path_a may join several "
                        "takes with '+', a voiceprint made as enroll makes one)")
    p.add_argument("--root", required=True, type=Path, help="directory the paths are relative to")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, metavar="DET.png", help="draw a DET curve (matplotlib)")
    p.add_argument("--model", type=Path, metavar="NAME|PATH",
                   help="a shipped model's name (default, default-short, campp, fusion) or an "
                        ".onnx encoder with its sidecar (default: the shipped default)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default: 1)")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="keep embeddings here between runs (keyed by model and settings)")
    p.add_argument("--margin", type=float, metavar="X",
                   help="report the accuracy, false accepts and false rejects at the model's "
                        "thresholds raised by X, as listen --margin X decides (-0.2 to 0.2)")
    p.add_argument("--no-norm", action="store_true",
                   help="plain cosine scores even if the model ships score normalisation "
                        "(the default's cohort shift; its thresholds assume the shift, so the "
                        "accuracy at them is then not what listen does)")
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``rtverify eval``; returns the exit code (0). Problems raise
    :class:`~rtverify.errors.RtverifyError`."""
    from ..core.encoder import MAX_THREADS

    if not 1 <= args.threads <= MAX_THREADS:
        raise InputError(f"--threads must be from 1 to {MAX_THREADS}, got {args.threads}")
    from ..config import check_margin

    try:
        check_margin(args.margin)
    except ValueError as err:
        raise InputError(f"--margin: {err}") from None
    from ..evaluation import run_eval

    print(run_eval(args.trials, args.root, model=args.model, threads=args.threads,
                   cache_dir=args.cache, score_norm=not args.no_norm, plot=args.plot,
                   as_json=args.json, progress=sys.stderr.isatty(), margin=args.margin))
    return 0
