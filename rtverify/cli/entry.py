"""The ``rtverify`` command: argparse subcommands over the pieces of the package.

Importing this module stays cheap (argparse only): numpy, onnxruntime and rich are imported inside
the commands, so ``rtverify --help`` answers at once. Every :class:`~rtverify.errors.RtverifyError`
becomes one line ``rtverify: error: ...`` on stderr and its exit code; anything else is a bug and
is reported on one line too (with the traceback under ``-v``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from .. import __version__
from ..config import (MAX_MARGIN, SAMPLE_RATE_HZ, VERIFY_TIMEOUT_S, check_margin,
                      check_threshold)
from ..errors import ExitCode, RtverifyError, shown
from ..io.stderr import write_stderr
from . import eval as eval_cli
from . import serve as serve_cli
from . import wyoming as wyoming_cli
from .commands import cmd_demo, cmd_devices, cmd_enroll, cmd_listen, cmd_verify, cmd_voices

logger = logging.getLogger("rtverify")


EXAMPLES = """\
examples:
  rtverify demo                                     enroll a bundled voice, play a conversation
  rtverify enroll --name alice                      guided enrolment from the microphone
  rtverify enroll --name alice --input a.wav b.wav  enroll from recordings (averaged)
  rtverify listen                                   live console: who is speaking?
  rtverify listen --name alice --json               one JSON object per event on stdout
  rtverify listen --input meeting.wav               decisions for a recording, as fast as possible
  arecord -f S16_LE -r 16000 | rtverify listen --input - --json
  rtverify enroll --name bob --input b.wav --store /srv/voices   global options go anywhere
  rtverify verify --name alice --input door.wav     exit 0 accepted, 1 rejected, 3 too little speech
  rtverify voices                                   list enrolled voices;  voices remove NAME
  rtverify voices copy --to postgresql://db/voices  copy every voice into another store
  rtverify devices                                  input devices and their default rates

exit codes: 0 ok/accepted, 1 rejected (verify), 2 usage or input error, 3 not enough speech,
4 internal error, 130 interrupted. Voices live in --store DIR, else $RTVERIFY_HOME, else
$XDG_DATA_HOME/rtverify (~/.local/share/rtverify).
"""


# -- logging --------------------------------------------------------------------------------------
class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is now (the live console redirects it while it draws),
    through :func:`rtverify.io.stderr.write_stderr`: a line logged from another thread while an
    MP3 block is decoded with descriptor 2 muted still arrives."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_stderr(self.format(record) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        return f"rtverify: {record.levelname.lower()}: {msg}"


def setup_logging(verbose: int) -> None:
    root = logging.getLogger("rtverify")
    for h in list(root.handlers):
        if isinstance(h, _StderrHandler):
            root.removeHandler(h)
    handler = _StderrHandler()
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


# -- the parser -----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors are one line, like every other error: ``rtverify: error: ...``, exit 2."""

    def error(self, message: str):
        sub = self.prog.split(" ", 1)[1] + " " if " " in self.prog else ""
        self.exit(ExitCode.USAGE, f"rtverify: error: {sub.strip() + ': ' if sub else ''}{message} "
                                  f"(see `{self.prog} --help`)\n")


def _number(kind, minimum, inclusive=False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum) or value != value \
                or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'>=' if inclusive else '>'} "
                                             f"{minimum}")
        return value
    return parse


def _threshold(text: str) -> float:
    """``--threshold``: the one rule (:func:`rtverify.config.check_threshold`), at parse time."""
    try:
        return check_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)}: must be a cosine between -1 and "
                                         "1") from None


def _margin(text: str) -> float:
    """``--margin``: the one rule (:func:`rtverify.config.check_margin`), at parse time."""
    try:
        return check_margin(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)}: must be a number between "
                                         f"-{MAX_MARGIN:g} and {MAX_MARGIN:g}") from None


MARGIN_HELP = ("raise (negative: lower) every threshold the model calibrated by X, -0.2 to "
               "0.2 (0.02, on clean speech: 0.26 %% of strangers let in instead of 0.82 %%, "
               "the enrolled voice refused 1.6 %% of the time instead of 0.5 %%; more in noisy "
               "rooms; README, Listening)")


def _add_thresholds(p, threshold_help: str) -> None:
    """``--threshold`` (a cosine replacing the model's thresholds) or ``--margin``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=_threshold, metavar="X", help=threshold_help)
    g.add_argument("--margin", type=_margin, metavar="X", help=MARGIN_HELP)


def _store_arg(hint: str):
    """A store argument's type (``--store``, ``voices copy --to``): an empty value (``--store
    "$VOICES"`` with the variable unset) would be the current directory, which enrolment then
    fills with voices and makes private (0700); it is refused with ``hint``."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"empty; {hint}")
        return text
    return check


_store_spec = _store_arg("give the voice store's directory (or leave --store out for the "
                         "default)")
_to_store_spec = _store_arg("give the directory or postgresql://... URL to copy the voices into")


def _global_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """--store and -v, on the top parser and again on every subcommand, so that they work before
    or after it (``rtverify voices --store DIR``). On a subcommand they default to SUPPRESS,
    so a value given before the subcommand is not reset by its absence after it."""
    dflt = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--store", metavar="DIR", type=_store_spec, help="voiceprint directory, or postgresql://... "
                   "(default: $RTVERIFY_HOME, else $XDG_DATA_HOME/rtverify)", **({"default": None} if top
                                                                      else dflt))
    p.add_argument("-v", "--verbose", action="count", help="debug logs on stderr",
                   **({"default": 0} if top else dflt))


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="NAME|PATH", help="a shipped encoder by name ('default', "
                   "'default-short', 'campp', or 'fusion': both, scores fused) or an .onnx file "
                   "with its .json sidecar beside it (or a fusion's .json); default: the shipped "
                   "default")


def _add_raw(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("raw PCM on stdin (with --input -)")
    g.add_argument("--rate", type=_number(int, 0), metavar="HZ",
                   help=f"sample rate (default {SAMPLE_RATE_HZ})")
    g.add_argument("--channels", type=_number(int, 0), metavar="N",
                   help="interleaved channels (default 1)")
    g.add_argument("--format", choices=["s16", "s32", "f32", "alaw", "ulaw"],
                   help="little-endian sample format, or G.711 telephone bytes (default s16)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="rtverify", formatter_class=fmt, epilog=EXAMPLES,
        description="Real-time speaker verification: enroll voices, then hear who is speaking.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, top=True)
    sub = _GlobalSubparsers(parser.add_subparsers(dest="command", metavar="COMMAND",
                                                  parser_class=_Parser))

    p = sub.add_parser("enroll", help="enroll a voice (microphone, or recordings)",
                       formatter_class=fmt, description="Enroll a voice. From the microphone "
                       "(default) every utterance is a take, checked and given feedback; enrolment "
                       "ends when enough takes and speech are collected. With --input, each "
                       "recording is one take and they are averaged; `--input -` reads raw PCM "
                       "from stdin as a live stream.")
    p.add_argument("--name", required=True, help="name of the voice")
    p.add_argument("--input", nargs="+", metavar="FILE", help="recording(s), or - for stdin")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_true", help="replace an existing voice of that name")
    how.add_argument("--add", action="store_true",
                     help="add takes to an enrolled voice (e.g. from the room or microphone it "
                          "will be used in); each must sound like the voice")
    p.add_argument("--vouch", action="store_true",
                   help="with --add: keep takes even when they do not sound like the voice as "
                        "enrolled (you vouch they are this person's: angry, excited, whispering, "
                        "hoarse); each is named with a warning")
    p.add_argument("--device", metavar="D", help="input device index or name (`rtverify devices`)")
    p.add_argument("--takes", type=_number(int, 0), metavar="N",
                   help="usable takes needed, live (default 3; 1 with --add)")
    p.add_argument("--min-speech", type=_number(float, 0), metavar="S",
                   help="seconds of speech needed (default 10 live, 3 from recordings; "
                        "1 with --add)")
    p.add_argument("--min-take", type=_number(float, 0, inclusive=True), metavar="S",
                   help="shortest usable live take, seconds of speech (default 1.0)")
    p.add_argument("--timeout", type=_number(float, 0), metavar="S",
                   help="give up a live enrolment after S seconds (default 120)")
    _add_model(p)
    _add_raw(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("listen", help="live console (or JSON lines) of who is speaking",
                       formatter_class=fmt, description="Listen to the microphone, a recording "
                       "or stdin and decide on every utterance. Without --name, identifies among "
                       "all enrolled voices ('unknown' when nobody passes).")
    p.add_argument("--name", action="extend", nargs="+", metavar="NAME",
                   help="only these voices (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    p.add_argument("--status", action="store_true", help="with --json, also emit a status event "
                   "(level, noise floor) every 0.1 s")
    p.add_argument("--input", metavar="FILE|-", help="a recording, or - for raw PCM on stdin")
    p.add_argument("--realtime", action="store_true", help="pace --input at real time")
    _add_thresholds(p, "accept at this cosine instead of the model's threshold")
    p.add_argument("--device", metavar="D", help="input device index or name")
    p.add_argument("--retries", type=_number(int, 0, inclusive=True), metavar="N",
                   help="when the microphone stops delivering audio, try to reopen it up to N "
                   "times (0.5 s, doubling to 10 s apart) before giving up (default: forever)")
    p.add_argument("--server", metavar="URL", help="send the audio to `rtverify serve` at URL "
                   "(ws://HOST:PORT) and print its decisions instead of deciding here")
    p.add_argument("--token-file", metavar="F", help="with --server: the server's bearer token")
    p.add_argument("--on-accept", metavar="CMD", help="run this shell command on each accepted "
                   "decision ($RTVERIFY_SPEAKER, $RTVERIFY_SCORE, ... in its environment, the "
                   "decision's JSON on its stdin; e.g. 'notify-send \"$RTVERIFY_SPEAKER\"')")
    p.add_argument("--on-reject", metavar="CMD", help="run this shell command on each utterance "
                   "heard and refused (an unknown voice; not sounds or too-short utterances)")
    _add_model(p)
    _add_raw(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("verify", help="one decision for a recording or the microphone "
                       "(exit 0/1/3)", formatter_class=fmt,
                       description="Is this recording (or whoever speaks now) NAME? Exit 0 "
                       "accepted, 1 rejected, 3 not enough speech, 2 usage or input error. "
                       "With --challenge the speaker must also say the digits shown (a "
                       "defence against replayed recordings; see README, Security).")
    p.add_argument("--name", required=True, help="the enrolled voice to check against")
    p.add_argument("--input", metavar="FILE|-", help="recording, or - for stdin (default: the "
                   "microphone, until a pause after the first utterance)")
    p.add_argument("--challenge", nargs="?", const="random", metavar="DIGITS",
                   help="liveness: without a value, print 5 random digits the speaker must say "
                   "(microphone or stdin); with DIGITS, the ones the speaker was shown. Needs "
                   "the 'liveness' extra (pocketsphinx)")
    p.add_argument("--live", action="store_true",
                   help="with --input -: stdin is a recorder that goes on (arecord ... |): "
                   "decide after the pause that follows the first utterance, as at the "
                   "microphone (without it stdin is read to its end, as a file); implied by "
                   "--challenge without digits")
    p.add_argument("--device", metavar="D", help="input device index or name (microphone)")
    p.add_argument("--timeout", type=_number(float, 0), metavar="S",
                   help="microphone or --live: give up when nobody speaks for S seconds "
                   f"(default {VERIFY_TIMEOUT_S:g})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    _add_thresholds(p, "override the model's threshold")
    _add_model(p)
    _add_raw(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("voices", help="list enrolled voices; `voices remove NAME`; "
                       "`voices copy --to STORE`",
                       epilog="examples:\n"
                       "  rtverify voices                          list the voices in the store\n"
                       "  rtverify voices remove alice bob         remove voices (all or none)\n"
                       "  rtverify voices copy --to postgresql://rtverify@db/voices\n"
                       "                                           every voice into a shared store\n"
                       "  rtverify --store postgresql://... voices copy --to ~/backup alice\n"
                       "                                           one voice into a directory",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=["list", "remove", "copy"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="one JSON object per voice")
    p.add_argument("--to", metavar="STORE", type=_to_store_spec,
                   help="copy: the store to copy the voices into (a directory, or "
                        "postgresql://...); every voice unless NAMEs are given")
    p.add_argument("--force", action="store_true",
                   help="copy: replace voices of the same name already in --to")
    _add_model(p)
    p.set_defaults(func=cmd_voices)

    p = sub.add_parser("devices", help="list audio input devices and their default rates")
    p.add_argument("--json", action="store_true",
                   help="one JSON array of the devices ([] when there are none)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="enroll a bundled voice and play a conversation through listen")
    p.add_argument("--fast", action="store_true", help="no real-time pacing (for tests)")
    _add_model(p)
    p.set_defaults(func=cmd_demo)

    eval_cli.register_cli(sub)
    wyoming_cli.register_cli(sub)
    serve_cli.register_cli(sub)
    return parser


class _GlobalSubparsers:
    """``add_subparsers()``'s action, giving every subcommand the global options too."""

    def __init__(self, action) -> None:
        self._action = action

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        p = self._action.add_parser(name, **kwargs)
        _global_options(p, top=False)
        return p


# -- entry point ----------------------------------------------------------------------------------
TERM_LIKE_CTRL_C = ("enroll", "verify", "eval", "voices", "devices", "listen", "demo")
"""Commands that SIGTERM ends as Ctrl-C does, from their start (a message, exit 130; ``enroll``
saves nothing). Once ``listen`` and ``demo`` run their stream, :func:`rtverify.apps.listen.run`
takes SIGTERM over and they end with their summary, as at Ctrl-C; before that (loading the
model, the voices) SIGTERM used to kill them silently (exit 143). The servers drain their
connections instead."""


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _term_like_ctrl_c() -> None:
    import signal

    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (tests calling main() in-process)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and getattr(args, "command", None) == "voices" and not any(
                x.startswith("-") for x in extra):
            args.names = [*args.names, *extra]  # `voices copy --to DIR alice bob`: names last
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # --help, --version, usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    setup_logging(args.verbose)
    if not args.verbose and args.command not in ("serve", "wyoming"):
        from ..io import sources  # a terminal: libmpg123's notes are noise there

        sources.MUTE_DECODER_NOTES = True
    func = getattr(args, "func", None)
    if args.command in TERM_LIKE_CTRL_C:
        _term_like_ctrl_c()
    if func is None:  # one line, as every usage error (README, "Voices and devices")
        print("rtverify: error: a command is required (rtverify --help lists them)",
              file=sys.stderr)
        return ExitCode.USAGE
    try:
        return int(func(args) or 0)
    except RtverifyError as err:
        logger.debug("error details", exc_info=True)
        print(f"rtverify: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("rtverify: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return ExitCode.OK
    except Exception as err:  # a bug in rtverify: one line, the traceback only when asked
        if args.verbose:
            traceback.print_exc()
        detail = " ".join(str(err).split()) or "no details"
        print(f"rtverify: internal error: {type(err).__name__}: {detail}"
              + ("" if args.verbose else " (run with -v for the traceback)"), file=sys.stderr)
        return ExitCode.BUG
