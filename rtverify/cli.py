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

from . import __version__
from .errors import InputError, NotEnoughSpeech, RtverifyError, StoreError

logger = logging.getLogger("rtverify")

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_NOT_ENOUGH_SPEECH, EXIT_BUG = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

EXAMPLES = """\
examples:
  rtverify demo                                     enroll a bundled voice, play a conversation
  rtverify enroll --name alice                      guided enrolment from the microphone
  rtverify enroll --name alice --input a.wav b.wav  enroll from recordings (averaged)
  rtverify listen                                   live console: who is speaking?
  rtverify listen --name alice --json               one JSON object per event on stdout
  rtverify listen --input meeting.wav               decisions for a recording, as fast as possible
  arecord -f S16_LE -r 16000 | rtverify listen --input - --json
  rtverify verify --name alice --input door.wav     exit 0 accepted, 1 rejected, 3 too little speech
  rtverify voices                                   list enrolled voices;  voices remove NAME
  rtverify devices                                  input devices and their default rates

exit codes: 0 ok/accepted, 1 rejected (verify), 2 usage or input error, 3 not enough speech,
4 internal error, 130 interrupted. Voices live in --store DIR, else $RTVERIFY_HOME, else
$XDG_DATA_HOME/rtverify (~/.local/share/rtverify).
"""


# -- logging --------------------------------------------------------------------------------------
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (the live console redirects it while it draws)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


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


# -- shared helpers -------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, flush=True)


def _store(args):
    from .voiceprints import VoiceprintStore

    return VoiceprintStore(args.store)


def _session(args):
    from .encoder import EncoderSession

    return EncoderSession(args.model)


def _input_spec(args, path: str | None):
    from .listen import InputSpec

    raw = {"--rate": args.rate, "--channels": args.channels, "--format": args.format}
    given = [k for k, v in raw.items() if v is not None]
    if given and path != "-":
        raise InputError(f"{', '.join(given)}: only for raw PCM on stdin (--input -)")
    return InputSpec(path=path, device=getattr(args, "device", None),
                     realtime=getattr(args, "realtime", False),
                     rate_hz=args.rate or 16000, channels=args.channels or 1,
                     sample_format=args.format or "s16")


def _threshold_text(session, override: float | None) -> str:
    if override is not None:
        return f"{override:.2f}"
    dec = session.info.decision
    if dec.thresholds_by_speech_s:
        ys = [t for _, t in dec.thresholds_by_speech_s]
        return f"{min(ys):.2f}-{max(ys):.2f} by length"
    return f"{dec.threshold:.2f}"


def _load_voices(args, session, store) -> dict:
    voices, problems = store.load_usable(session.model_id, args.name)
    for problem in problems:
        logger.warning("%s; skipped", problem)
    if not voices:
        raise StoreError(f"no usable voice enrolled in {store.root}; enroll one first "
                         "(rtverify enroll --name NAME [--input FILE ...])")
    return voices


# -- commands -------------------------------------------------------------------------------------
def cmd_enroll(args) -> int:
    from .enroll import EnrollSettings, enroll_files, enroll_live
    from .voiceprints import validate_name

    name = validate_name(args.name)
    store = _store(args)
    if store.exists(name) and not args.force:
        raise StoreError(f"voice {name!r} is already enrolled ({store.path_for(name)}); "
                         "use --force to replace it")
    defaults = EnrollSettings()
    settings = EnrollSettings(takes=args.takes or defaults.takes,
                              min_take_s=defaults.min_take_s if args.min_take is None
                              else args.min_take,
                              timeout_s=args.timeout or defaults.timeout_s)
    session = _session(args)
    files = args.input or []
    if files and files != ["-"]:
        if "-" in files:
            raise InputError("--input -: raw stdin cannot be mixed with recordings")
        enrol = enroll_files(session, files, settings, min_speech_s=args.min_speech)
    else:
        source = _input_spec(args, "-" if files else None).open()
        need = (settings.takes, settings.min_speech_s if args.min_speech is None
                else args.min_speech)
        try:
            if sys.stderr.isatty():
                from .console import EnrollConsole

                with EnrollConsole(*need, source.name) as view:
                    enrol = enroll_live(session, source, settings, view, min_speech_s=need[1])
            else:
                enrol = enroll_live(session, source, settings, _LineView(source.name, *need),
                                    min_speech_s=need[1])
        except KeyboardInterrupt:
            print("rtverify: interrupted; nothing was saved", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            source.close()
        if not enrol.done:
            raise NotEnoughSpeech(f"enrolment of {name!r} ended with {enrol.shortfall()}; "
                                  "nothing was saved")
    path = store.save(enrol.voiceprint(name, session.model_id), force=args.force)
    _say(f"enrolled {name!r}: {len(enrol.takes)} take(s), {enrol.speech_s:.1f} s of speech, "
         f"model {session.model_id} -> {path}")
    return EXIT_OK


class _LineView:
    """Live enrolment feedback as plain lines on stderr (no terminal)."""

    def __init__(self, source_name: str, need_takes: int, need_speech_s: float) -> None:
        print(f"recording from {source_name}: {need_takes} takes and {need_speech_s:g} s of "
              "speech needed", file=sys.stderr, flush=True)

    def level(self, status) -> None:
        pass

    def speaking(self, start_s: float) -> None:
        pass

    def take(self, take, problem, enrol) -> None:
        verdict = "ok" if problem is None else f"refused: {problem}"
        print(f"take at {take.source}: {verdict} [{len(enrol.takes)}/{enrol.need_takes} takes, "
              f"{enrol.speech_s:.1f}/{enrol.need_speech_s:g} s]", file=sys.stderr, flush=True)


def cmd_listen(args) -> int:
    from .listen import JsonSink, check_threshold, run
    from .pipeline import Verifier

    spec = _input_spec(args, args.input)
    threshold = check_threshold(args.threshold)
    session = _session(args)
    voices = _load_voices(args, session, _store(args))
    source = spec.open()
    verifier = Verifier(session, voices, threshold=threshold, max_pending=1 if spec.live else 8,
                        status_every_s=0.1 if (args.status or not args.json) else 0.0)
    info = {"source": source.name, "model_id": session.model_id, "voices": sorted(voices),
            "threshold": _threshold_text(session, threshold), "realtime": spec.live}
    if args.json:
        sink = JsonSink(status=args.status)
    else:
        from .console import ConsoleSink, ListenView

        sink = ConsoleSink(ListenView("rtverify listen", source.name, sorted(voices),
                                      info["threshold"]))
    run(verifier, source, sink, info)
    return EXIT_OK


def cmd_verify(args) -> int:
    import json

    from .listen import check_threshold
    from .pipeline import embed_recording
    from .scoring import DecisionPolicy, cosine_scores

    spec = _input_spec(args, args.input)
    threshold = check_threshold(args.threshold)
    session = _session(args)
    vp = _store(args).load(args.name, session.model_id)
    rec = embed_recording(session, spec.open())
    policy = DecisionPolicy(session.info.decision, threshold)
    where = "stdin" if args.input == "-" else args.input
    if rec.vector is None or rec.speech_s < session.info.decision.min_speech_s:
        raise NotEnoughSpeech(f"{where}: {rec.speech_s:.1f} s of speech, at least "
                              f"{session.info.decision.min_speech_s:.1f} s are needed to decide")
    d = policy.decide(cosine_scores(rec.vector, {vp.name: vp.embedding}), rec.speech_s)
    if args.json:
        _say(json.dumps({"event": "verify", "input": where, "name": vp.name,
                         "accepted": d.accepted, "score": round(d.score, 4),
                         "threshold": round(d.threshold, 4), "margin": round(d.margin, 4),
                         "speech_s": round(rec.speech_s, 2), "n_windows": rec.n_windows,
                         "clipped": rec.clipped, "reason": d.reason,
                         "model_id": session.model_id}))
    else:
        verdict = "ACCEPTED" if d.accepted else "REJECTED"
        sign = ">=" if d.accepted else "<"
        _say(f"{vp.name}: {verdict} (score {d.score:.3f} {sign} threshold {d.threshold:.3f}, "
             f"{rec.speech_s:.1f} s of speech in {where})")
    return EXIT_OK if d.accepted else EXIT_REJECTED


def cmd_voices(args) -> int:
    import json

    from .encoder import DEFAULT_MODEL, load_model_info

    store = _store(args)
    if args.action == "remove":
        if not args.names:
            raise InputError("voices remove: name the voice(s) to remove")
        for name in args.names:
            _say(f"removed {name!r} ({store.remove(name)})")
        return EXIT_OK
    if args.names:
        raise InputError(f"voices: unexpected argument(s) {' '.join(args.names)!r}; "
                         "use `voices remove NAME`")
    model_id = load_model_info(args.model or DEFAULT_MODEL).model_id
    entries = store.entries(model_id)
    if args.json:
        for e in entries:
            vp = e.voiceprint
            _say(json.dumps({"name": e.name, "path": str(e.path), "usable": vp is not None,
                             "problem": e.problem,
                             **({"created": vp.created, "model_id": vp.model_id,
                                 "speech_s": vp.speech_s, "n_takes": vp.n_takes} if vp else {})},
                            ensure_ascii=False))
        return EXIT_OK
    if not entries:
        _say(f"no voices enrolled (store: {store.root})")
        return EXIT_OK
    _say(f"store: {store.root}")
    width = max(4, max(len(e.name) for e in entries))
    _say(f"{'NAME':<{width}}  {'CREATED (UTC)':<20}  {'MODEL':<22}  SPEECH  TAKES")
    for e in entries:
        vp = e.voiceprint
        if vp is None:
            _say(f"{e.name:<{width}}  unusable: {e.problem}")
        else:
            _say(f"{e.name:<{width}}  {vp.created:<20}  {vp.model_id:<22}  "
                 f"{vp.speech_s:5.1f}s  {vp.n_takes:5d}")
    return EXIT_OK


def cmd_devices(args) -> int:
    import json

    from .sources import list_input_devices

    devices = list_input_devices()
    if args.json:
        for d in devices:
            _say(json.dumps(d, ensure_ascii=False))
        return EXIT_OK
    if not devices:
        _say("no input devices found")
        return EXIT_OK
    _say(f"{'INDEX':>5}  {'CHANNELS':>8}  {'DEFAULT RATE':>12}  NAME")
    for d in devices:
        mark = "  (default)" if d["default"] else ""
        _say(f"{d['index']:>5}  {d['channels']:>8}  {d['default_rate_hz']:>9} Hz  {d['name']}{mark}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo_run import run_demo

    return run_demo(args.model, realtime=not args.fast)


# -- the parser -----------------------------------------------------------------------------------
def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="encoder .onnx (with its .json sidecar beside "
                   "it); default: the shipped model")


def _add_raw(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("raw PCM on stdin (with --input -)")
    g.add_argument("--rate", type=int, metavar="HZ", help="sample rate (default 16000)")
    g.add_argument("--channels", type=int, metavar="N", help="interleaved channels (default 1)")
    g.add_argument("--format", choices=["s16", "s32", "f32"], help="little-endian sample format "
                   "(default s16)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="rtverify", formatter_class=fmt, epilog=EXAMPLES,
        description="Real-time speaker verification: enroll voices, then hear who is speaking.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--store", metavar="DIR", help="voiceprint directory (default: "
                        "$RTVERIFY_HOME, else $XDG_DATA_HOME/rtverify)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("enroll", help="enroll a voice (microphone, or recordings)",
                       formatter_class=fmt, description="Enroll a voice. From the microphone "
                       "(default) every utterance is a take, checked and given feedback; enrolment "
                       "ends when enough takes and speech are collected. With --input, each "
                       "recording is one take and they are averaged; `--input -` reads raw PCM "
                       "from stdin as a live stream.")
    p.add_argument("--name", required=True, help="name of the voice")
    p.add_argument("--input", nargs="+", metavar="FILE", help="recording(s), or - for stdin")
    p.add_argument("--force", action="store_true", help="replace an existing voice of that name")
    p.add_argument("--device", metavar="D", help="input device index or name (`rtverify devices`)")
    p.add_argument("--takes", type=int, metavar="N", help="usable takes needed, live (default 3)")
    p.add_argument("--min-speech", type=float, metavar="S", help="seconds of speech needed "
                   "(default 10 live, 3 from recordings)")
    p.add_argument("--min-take", type=float, metavar="S", help="shortest usable live take, "
                   "seconds of speech (default 1.0)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up a live enrolment after "
                   "S seconds (default 120)")
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
    p.add_argument("--threshold", type=float, metavar="X", help="accept at this cosine instead "
                   "of the model's threshold")
    p.add_argument("--device", metavar="D", help="input device index or name")
    _add_model(p)
    _add_raw(p)
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("verify", help="one decision for a recording (exit 0/1/3)",
                       formatter_class=fmt, description="Is this recording NAME? Exit 0 accepted, "
                       "1 rejected, 3 not enough speech, 2 usage or input error.")
    p.add_argument("--name", required=True, help="the enrolled voice to check against")
    p.add_argument("--input", required=True, metavar="FILE|-", help="recording, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--threshold", type=float, metavar="X", help="override the model's threshold")
    _add_model(p)
    _add_raw(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("voices", help="list enrolled voices; `voices remove NAME`")
    p.add_argument("action", nargs="?", choices=["list", "remove"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--json", action="store_true", help="one JSON object per voice")
    _add_model(p)
    p.set_defaults(func=cmd_voices)

    p = sub.add_parser("devices", help="list audio input devices and their default rates")
    p.add_argument("--json", action="store_true", help="one JSON object per device")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("demo", help="enroll a bundled voice and play a conversation through listen")
    p.add_argument("--fast", action="store_true", help="no real-time pacing (for tests)")
    _add_model(p)
    p.set_defaults(func=cmd_demo)

    _register_eval(sub)
    return parser


def _register_eval(sub) -> None:
    """``eval`` comes from :mod:`rtverify.evaluation` when that module is present."""
    import importlib

    try:
        evaluation = importlib.import_module(f"{__package__}.evaluation")
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.evaluation":
            raise
        return
    evaluation.register_cli(sub)
    parser = sub.choices.get("eval")
    if parser is not None and parser.get_default("func") is None:
        parser.set_defaults(func=evaluation.cmd_eval)


# -- entry point ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    setup_logging(args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("rtverify: error: a command is required (rtverify --help lists them)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except RtverifyError as err:
        logger.debug("error details", exc_info=True)
        print(f"rtverify: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("rtverify: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as err:  # a bug in rtverify: one line, the traceback only when asked
        if args.verbose:
            traceback.print_exc()
        detail = " ".join(str(err).split()) or "no details"
        print(f"rtverify: internal error: {type(err).__name__}: {detail}"
              + ("" if args.verbose else " (run with -v for the traceback)"), file=sys.stderr)
        return EXIT_BUG
