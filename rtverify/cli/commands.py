"""What each ``rtverify`` subcommand does, given its parsed arguments (see :mod:`rtverify.cli.entry`).

Each ``cmd_*`` returns the exit code and raises :class:`~rtverify.errors.RtverifyError` for
anything the user can fix. Heavy modules (numpy, onnxruntime, rich) are imported inside the
commands, so that ``rtverify --help`` never pays for them.
"""

from __future__ import annotations

import logging
import sys

from ..config import SAMPLE_RATE_HZ, VERIFY_TIMEOUT_S
from ..errors import ExitCode, InputError, NotEnoughSpeech, StoreError

logger = logging.getLogger("rtverify")


# -- shared helpers -------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, flush=True)


def _store(args):
    from ..store import open_store

    return open_store(args.store)


def _session(args, threads: int | None = None):
    import time

    from ..core.encoder import EncoderSession

    t0 = time.perf_counter()
    session = EncoderSession(args.model, threads=threads)
    logger.debug("model %s loaded from %s in %.0f ms", session.model_id, session.path,
                 (time.perf_counter() - t0) * 1000)
    return session


def _input_spec(args, path: str | None, *, realtime: bool = False, retries: int | None = None,
                reconnect: bool = False, stall_s: float | None = None):
    """The frozen input setting of a command, from its arguments (``--input``, ``--device``
    and the raw-PCM options, which every command that reads audio has)."""
    from ..io.inputs import InputSpec

    raw = {"--rate": args.rate, "--channels": args.channels, "--format": args.format}
    given = [k for k, v in raw.items() if v is not None]
    if given and path != "-":
        raise InputError(f"{', '.join(given)}: only for raw PCM on stdin (--input -)")
    if path is not None and args.device is not None:
        raise InputError("--device: only for the microphone, not with --input")
    if path is None and realtime:
        raise InputError("--realtime: only with --input (the microphone is real time already)")
    if path is not None and retries is not None:
        raise InputError("--retries: only for the microphone, not with --input")
    return InputSpec(path=path, device=args.device, realtime=realtime,
                     rate_hz=args.rate or SAMPLE_RATE_HZ, channels=args.channels or 1,
                     sample_format=args.format or "s16", retries=retries, reconnect=reconnect,
                     stall_s=stall_s)


def _load_voices(args, session, store) -> dict:
    voices, problems = store.load_usable(session.model_id, args.name, session.dim,
                                         session.companion_ids)
    for problem in problems:
        logger.warning("%s; skipped", problem)
    if not voices:
        raise StoreError(f"no usable voice enrolled in {store.root}; enroll one first "
                         "(rtverify enroll --name NAME [--input FILE ...])")
    return voices


# -- commands -------------------------------------------------------------------------------------
def cmd_enroll(args) -> int:
    from ..apps.enroll import (ADD_MIN_SPEECH_S, EnrollSettings, enroll_files, enroll_live,
                               voice_to_add_to, voice_to_enrol)
    from ..events import plural
    from ..store.voiceprints import validate_name

    name = validate_name(args.name)
    store = _store(args)
    adding = args.add
    if args.vouch and not adding:
        raise InputError("--vouch goes with --add: it keeps added takes that do not sound like "
                         "the voice as enrolled")
    old = voice_to_enrol(store, name, force=args.force, add=adding)  # before the model loads
    defaults = EnrollSettings()
    if adding and args.min_speech is None:
        args.min_speech = ADD_MIN_SPEECH_S
    settings = EnrollSettings(takes=args.takes or (1 if adding else defaults.takes),
                              min_take_s=defaults.min_take_s if args.min_take is None
                              else args.min_take,
                              timeout_s=args.timeout or defaults.timeout_s)
    session = _session(args)
    if adding:
        voice_to_add_to(old, session)  # refused before anything is recorded
    files = args.input or []
    if files and files != ["-"]:
        _input_spec(args, files[0])  # refuses microphone/stdin options that do not apply
        if "-" in files:
            raise InputError("--input -: raw stdin cannot be mixed with recordings")
        enrol = enroll_files(session, files, settings, min_speech_s=args.min_speech,
                             vouched=args.vouch)
    else:
        # a recorder's pipe that stalls without closing ends at the timeout, as silence does
        source = _input_spec(args, "-" if files else None, stall_s=settings.timeout_s).open()
        need = (settings.takes, settings.min_speech_s if args.min_speech is None
                else args.min_speech)
        try:
            if sys.stderr.isatty():
                from ..ui.console import EnrollConsole

                with EnrollConsole(*need, source.name) as view:
                    enrol = enroll_live(session, source, settings, view, min_speech_s=need[1],
                                        voice=old, vouched=args.vouch)
            else:
                view = _LineView(source.name, *need, wait_for_audio=bool(files))
                enrol = enroll_live(session, source, settings, view, min_speech_s=need[1],
                                    voice=old, vouched=args.vouch)
        except KeyboardInterrupt:
            print("rtverify: interrupted; nothing was saved", file=sys.stderr)
            return ExitCode.INTERRUPTED
        finally:
            source.close()
        if not enrol.done:
            raise NotEnoughSpeech(f"enrolment of {name!r} ended with {enrol.shortfall()}; "
                                  "nothing was saved")
    from ..apps.enroll import save_enrolment

    vp, path = save_enrolment(store, session, name, enrol, old=old, force=args.force,
                              vouched=args.vouch)
    if adding:
        _say(f"added {plural(len(enrol.takes), 'take')} ({enrol.speech_s:.1f} s of speech) to "
             f"{name!r}: now {plural(vp.n_takes, 'take')}, {vp.speech_s:.1f} s of speech, model "
             f"{session.model_id} -> {path}")
        return ExitCode.OK
    _say(f"enrolled {name!r}: {plural(len(enrol.takes), 'take')}, {enrol.speech_s:.1f} s of speech, "
         f"model {session.model_id} -> {path}")
    return ExitCode.OK


class _LineView:
    """Live enrolment feedback as plain lines on stderr (no terminal). From a microphone the
    first line says at once that it is recording; from a stream it comes with the first audio,
    so a stream that fails at once leaves only its one-line error."""

    def __init__(self, source_name: str, need_takes: int, need_speech_s: float,
                 wait_for_audio: bool = False) -> None:
        takes = "1 take" if need_takes == 1 else f"{need_takes} takes"
        self._header: str | None = (f"recording from {source_name}: {takes} and "
                                    f"{need_speech_s:g} s of speech needed")
        if not wait_for_audio:
            self._start()

    def _start(self) -> None:
        if self._header is not None:
            print(self._header, file=sys.stderr, flush=True)
            self._header = None

    def level(self, status) -> None:
        self._start()

    def speaking(self, start_s: float) -> None:
        self._start()

    def take(self, take, problem, enrol) -> None:
        self._start()
        verdict = "ok" if problem is None else f"refused: {problem}"
        print(f"take at {take.source}: {verdict} [{len(enrol.takes)}/{enrol.need_takes} takes, "
              f"{enrol.speech_s:.1f}/{enrol.need_speech_s:g} s]", file=sys.stderr, flush=True)


def cmd_listen(args) -> int:
    from ..hooks import Hooks

    hooks = Hooks(args.on_accept, args.on_reject)  # checked before anything is loaded
    if args.status and not args.json:  # it did nothing: the console shows the level itself
        raise InputError("--status goes with --json (the console shows the level itself)")
    if args.server:  # the server decides; see rtverify.client
        from ..client import listen_command

        return listen_command(args, hooks)
    from ..apps.listen import run
    from ..core.encoder import default_threads
    from ..core.pipeline import Verifier
    from ..events import Ready

    # a lost microphone is reopened (--retries), not the end of listen
    spec = _input_spec(args, args.input, realtime=args.realtime, retries=args.retries,
                       reconnect=True)
    # A recording read as fast as possible with N >= 2 threads (RTVERIFY_THREADS): N workers embed
    # and decide finished utterances while the main thread segments what follows, each worker
    # with one onnxruntime thread (an utterance's few windows are too small a batch to split).
    threads = default_threads()
    workers = threads if not spec.live and threads >= 2 else 0
    session = _session(args, threads=1 if workers else None)
    voices = _load_voices(args, session, _store(args))
    source = spec.open()
    logger.debug("listening to %s (%s) for %s", source.name,
                 "live" if spec.live else "as fast as possible", ", ".join(sorted(voices)))
    verifier = Verifier(session, voices, threshold=args.threshold, margin=args.margin,
                        max_pending=1 if spec.live else 8,
                        status_every_s=0.1 if (args.status or not args.json) else 0.0,
                        workers=workers)
    ready = Ready(source.name, session.model_id, sorted(voices),
                  verifier.policy.describe(), spec.live)
    if args.json:
        from ..ui.jsonl import JsonSink

        sink = JsonSink(status=args.status)
    else:
        from ..ui.console import ConsoleSink, ListenView

        sink = ConsoleSink(ListenView("rtverify listen", source.name, ready.voices,
                                      ready.threshold, tally=verifier.tally))
    if hooks:
        from ..hooks import HookSink

        sink = HookSink(sink, hooks)
    watch = _ReaderWatch(source) if spec.path is None else None
    try:
        run(verifier, source, sink, ready)
    finally:
        if watch is not None:
            watch.stop()
        verifier.close()
    return ExitCode.OK


class _ReaderWatch:
    """Ends ``listen`` at the microphone when the reader of its stdout goes away
    (``rtverify listen --json | head -1``). A write to the closed pipe ends it anyway (exit 0),
    but at the microphone nothing is written while the room is silent, so it went on listening,
    and the shell pipeline waited on it, until somebody spoke. A thread polls stdout for the
    error a pipe reports once its reader has closed it, and then closes the source: the run
    ends as a stream does, and writing the summary meets the broken pipe."""

    POLL_S = 0.25

    def __init__(self, source) -> None:
        import select
        import threading

        self._source = source
        self._done = threading.Event()
        try:
            fd = sys.stdout.fileno()
            self._poll = select.poll()
            self._poll.register(fd, 0)  # POLLERR/POLLHUP/POLLNVAL are reported regardless
        except (AttributeError, OSError, ValueError):  # no real stdout (tests in-process)
            return
        threading.Thread(target=self._run, name="rtverify-stdout-watch", daemon=True).start()

    def _run(self) -> None:
        import select

        while not self._done.is_set():
            try:
                events = self._poll.poll(self.POLL_S * 1000)
            except OSError:
                return
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                if not self._done.is_set():
                    logger.debug("the reader of stdout went away; stopping")
                    self._source.close()
                return
            if events:  # POLLNVAL: nothing to watch
                return

    def stop(self) -> None:
        self._done.set()


def cmd_verify(args) -> int:
    import json

    from ..apps.verify import verify

    # stdin as a recorder (--live, or a random challenge, answered live): decided after a
    # pause, not at an end that never comes, and a pipe that stalls without closing ends at the
    # timeout, as silence does; stdin read to its end as a file waits for its end
    stdin_live = args.live or args.challenge == "random"
    spec = _input_spec(args, args.input,
                       stall_s=(args.timeout or VERIFY_TIMEOUT_S) if stdin_live else None)
    if args.live and spec.path != "-":
        raise InputError("--live: only with --input - (a recording is read to its end; the "
                         "microphone is live already)")
    challenge, recogniser = None, None
    if args.challenge is not None:
        from ..apps.liveness import DigitRecognizer, make_challenge, parse_challenge

        if args.challenge == "random":
            if spec.path not in (None, "-"):
                raise InputError("--challenge: a recording made before the challenge was shown "
                                 "proves nothing; give the digits the speaker was shown "
                                 "(--challenge 31415) or answer at the microphone")
            challenge = make_challenge()
        else:
            challenge = parse_challenge(args.challenge)
        recogniser = DigitRecognizer()  # fails now, not after recording, if it is missing
    session = _session(args)
    vp = _store(args).load(args.name, session.model_id, session.dim)
    source = spec.open()
    where = {None: source.name, "-": "stdin"}.get(args.input, args.input)
    if args.challenge == "random":
        print(f"Say these digits: {' '.join(challenge)}", file=sys.stderr, flush=True)
    elif spec.path is None:
        print(f"Listening on {source.name}: speak now", file=sys.stderr, flush=True)
    try:
        result = verify(session, vp, source, where, live=spec.live or stdin_live,
                        threshold=args.threshold, margin=args.margin,
                        timeout_s=args.timeout or VERIFY_TIMEOUT_S, challenge=challenge,
                        recogniser=recogniser)
    finally:
        source.close()
    d, rec, said = result.decision, result.recording, result.challenge
    if args.json:
        _say(json.dumps(result.to_dict(where, vp.name, session.model_id)))
    else:
        verdict = "ACCEPTED" if result.accepted else "REJECTED"
        sign = ">=" if d.accepted else "<"
        extra = ""
        if said.get("several_voices"):
            extra = f"; it holds more than one voice: {said['several_voices']}"
        if said.get("challenge"):
            extra += (f"; challenge {challenge}: heard {said['heard'] or 'nothing'}, "
                     + ("ok" if said["challenge_ok"] else "WRONG"))
        _say(f"{vp.name}: {verdict} (score {d.score:.3f} {sign} threshold {d.threshold:.3f}, "
             f"{rec.speech_s:.1f} s of speech in {where}{extra})")
    return ExitCode.OK if result.accepted else ExitCode.REJECTED


def cmd_voices(args) -> int:
    import json

    from ..core.encoder import DEFAULT_MODEL, load_model_info
    from ..store.voiceprints import names_to_remove

    store = _store(args)
    copy_only = [opt for opt, given in (("--to", args.to is not None), ("--force", args.force))
                 if given]
    if args.action != "copy" and copy_only:
        raise InputError(f"voices {args.action}: {' and '.join(copy_only)} only go with "
                         "`voices copy --to STORE`")
    if args.action == "copy":
        from ..events import plural
        from ..store import open_store
        from ..store.transfer import copy_voices

        if args.to is None:
            raise InputError("voices copy: give the store to copy into, --to DIR or "
                             "--to postgresql://...")
        dest = open_store(args.to)
        done = copy_voices(store, dest, args.names, force=args.force)
        for name, where in done:
            _say(f"copied {name!r} ({where})")
        _say(f"copied {plural(len(done), 'voice')} from {store.root} to {dest.root}")
        return ExitCode.OK
    if args.action == "remove":
        if not args.names:
            raise InputError("voices remove: name the voice(s) to remove")
        names = names_to_remove(args.names)  # all or nothing: the store checks every name first
        for name, where in zip(names, store.remove_all(names)):
            _say(f"removed {name!r} ({where})")
        return ExitCode.OK
    if args.names:
        raise InputError(f"voices: unexpected argument(s) {' '.join(args.names)!r}; "
                         "use `voices remove NAME` or `voices copy --to STORE NAME`")
    info = load_model_info(args.model or DEFAULT_MODEL)
    entries = store.entries(info.model_id, info.embedding_dim)
    if args.json:
        for e in entries:
            vp = e.voiceprint
            _say(json.dumps({"name": e.name, "path": str(e.path), "usable": vp is not None,
                             "problem": e.problem,
                             **({"created": vp.created, "model_id": vp.model_id,
                                 "models": [vp.model_id, *sorted(vp.models or {})],
                                 "speech_s": vp.speech_s, "n_takes": vp.n_takes} if vp else {})},
                            ensure_ascii=False))
        return ExitCode.OK
    if not entries:
        _say(f"no voices enrolled (store: {store.root})")
        return ExitCode.OK
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
    return ExitCode.OK


def cmd_devices(args) -> int:
    import json

    from ..io.sources import list_input_devices

    devices = list_input_devices()
    if args.json:  # one JSON array, `[]` when there are none
        _say(json.dumps(devices, ensure_ascii=False))
        return ExitCode.OK
    if not devices:
        _say("no input devices found")
        return ExitCode.OK
    _say(f"{'INDEX':>5}  {'CHANNELS':>8}  {'DEFAULT RATE':>12}  NAME")
    for d in devices:
        mark = "  (default)" if d["default"] else ""
        _say(f"{d['index']:>5}  {d['channels']:>8}  {d['default_rate_hz']:>9} Hz  {d['name']}{mark}")
    return ExitCode.OK


def cmd_demo(args) -> int:
    from ..apps.demo import run_demo

    return run_demo(args.model, realtime=not args.fast)
