"""The ``rtverify`` command line: argparse -> frozen settings -> apps (see :mod:`.entry`)."""

from .entry import build_parser, main

__all__ = ["build_parser", "main"]
