"""The ``rtverify eval`` arguments, kept apart from :mod:`rtverify.evaluation` so that building the
CLI parser imports nothing heavy (``rtverify --help`` stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "eval", help="EER, minDCF and accuracy on a trials list",
        description="Embed every file of a trials list through the live pipeline (VAD, "
                    "features, windows) and report EER, minDCF (p_target 0.01) and accuracy.",
        epilog="example: rtverify eval --trials ../shared/data/trials/arabic-test-1s.txt "
               "--root ../shared/data --json")
    p.add_argument("--trials", required=True, type=Path,
                   help="lines 'label path_a path_b' (1 = same speaker)")
    p.add_argument("--root", required=True, type=Path, help="directory the paths are relative to")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, metavar="DET.png", help="draw a DET curve (matplotlib)")
    p.add_argument("--model", type=Path, help="an .onnx encoder with its sidecar "
                                              "(default: the shipped model)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default: 1)")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="keep embeddings here between runs (keyed by model and settings)")
    p.add_argument("--no-norm", action="store_true",
                   help="plain cosine scores even if the model ships score normalisation")
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import cmd_eval as run

    return run(args)
