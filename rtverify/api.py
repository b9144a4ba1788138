"""rtverify inside a Python program: what ``listen`` and ``verify`` do, without the CLI or a server.

An assistant that answers only its owner, a door lock, a meeting tool: feed it the audio you
already have (numpy arrays from your own capture, at your rate) and act on the events::

    import rtverify.api as rtv

    with rtv.Listener(names=["alice"]) as heard:          # the default model and voice store
        for block in my_audio():                          # int16 or float arrays, mono
            for event in heard.feed(block):
                if event.kind == "decision" and event.accepted:
                    print(event.speaker, "spoke from", event.start_s, "to", event.end_s)
        for event in heard.finish():                      # the end: the last utterance decided
            ...
        result = heard.verify("alice", "door.wav")        # one decision for a recording
        print(result.accepted, result.decision.score)
        heard.enroll("bob", [take1, take2])               # enrol from arrays (or paths)
        for event in heard.microphone():                  # or the microphone, as `listen`
            ...

Events are those of ``listen --json`` (:mod:`rtverify.events`, by ``event.kind``: ``decision``,
``provisional``, ``dropped``, ``speech_start``; ``event.to_dict()`` is the JSON line). Errors a
caller can cause (a voice not enrolled, a bad rate, NaN samples, too little speech) are
:class:`~rtverify.errors.RtverifyError` subclasses whose message is one line. One
:class:`Listener` is one loaded model and one stream at a time: keep it for the program's life
(the model loads in about a second); two streams at once want two Listeners. Not thread-safe.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Iterator

import numpy as np

from .apps.verify import VerifyResult
from .config import SAMPLE_RATE_HZ
from .errors import InputError, StoreError
from .events import Event
from .io.sources import Chunk, FileSource, _check_rate, _ResamplingSource, as_source

__all__ = ["Listener", "VerifyResult"]

def as_float_block(samples, name: str) -> np.ndarray:
    """``samples`` (int16, int32 or float, shape ``(n,)`` or ``(n, channels)``) as float32
    ``(n, channels)`` at full scale 1.0; anything else is an :class:`InputError`."""
    a = np.asarray(samples)
    if a.dtype.kind == "i" and a.dtype.itemsize in (2, 4):  # either byte order ('>i2' too)
        a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))  # as pcm_to_float
    elif a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            wide = a
            a = a.astype(np.float32, copy=False)
            if a is not wide and np.isfinite(wide).all() and not np.isfinite(a).all():
                raise InputError(f"{name}: sample values up to {float(np.max(np.abs(wide))):.3g},"
                                 " far over full scale 1.0 (integers stored as floats?)")
    else:
        raise InputError(f"{name}: samples of type {a.dtype} are not supported (int16, int32 "
                         "or float, full scale 1.0)")
    if a.ndim == 1:
        return a[:, None]
    if a.ndim == 2 and 1 <= a.shape[1] <= 64:
        return a
    raise InputError(f"{name}: samples of shape {a.shape} are not audio (give (n,) for mono or "
                     "(n, channels) with at most 64 channels)")


def _as_list(values, what: str, wanted: str) -> list:
    """``list(values)``, or an :class:`InputError` for what is not iterable (a caller's 5)."""
    try:
        return list(values)
    except TypeError:
        raise InputError(f"{what} {values!r}: give {wanted}") from None


def _and_tail(stream: "ArrayStream", chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """``chunks``, then the tail ``stream.finish()`` gives once they are taken."""
    yield from chunks
    tail = stream.finish()
    if tail is not None:
        yield tail


class ArrayStream(_ResamplingSource):
    """Arrays pushed by the caller as 16 kHz mono :class:`Chunk` s: the mixing, resampling and
    checks (NaN, infinities, over full scale) of every other source."""

    def __init__(self, rate_hz: int, name: str = "audio") -> None:
        super().__init__(name, _check_rate(rate_hz, name), realtime=False)

    SLICE_S = 1.0
    """Seconds of input converted at a time: an hour given in one block had been converted
    whole, holding about 8 times its size (10 minutes of 48 kHz stereo int16, 110 MiB: 858 MiB
    more at the peak)."""

    def push(self, samples) -> Iterator[Chunk]:
        """The chunks of ``samples``, made a slice at a time as they are taken. Every slice is
        checked first (here, not when taken), so a block with a NaN is refused whole."""
        a = np.asarray(samples)
        step = max(1, int(self.rate_in_hz * self.SLICE_S))
        if a.ndim == 0 or len(a) <= step:
            block = as_float_block(a, self.name)
            chunk = self._convert(block) if len(block) else None
            return iter([chunk] if chunk is not None else [])
        t0 = self.position_s
        for i in range(0, len(a), step):
            self._check(as_float_block(a[i:i + step], self.name), t0 + i / self.rate_in_hz)
        return self._slices(a, step)

    def _slices(self, a: np.ndarray, step: int) -> Iterator[Chunk]:
        for i in range(0, len(a), step):
            chunk = self._convert(as_float_block(a[i:i + step], self.name))
            if chunk is not None:
                yield chunk

    def finish(self) -> Chunk | None:
        return self._finish()


class Listener:
    """A loaded model, the voices to listen for, and one audio stream.

    :param names: the enrolled voices to listen for (each must load; one name may be given as
        a string); None: every usable voice in the store (at least one).
    :param store: a voice store directory or ``postgresql://...`` URL; None: the default
        (``$RTVERIFY_HOME``, else ``$XDG_DATA_HOME/rtverify``), as the CLI's ``--store``.
    :param model: a shipped model's name (``default``, ``default-short``, ``campp``,
        ``fusion``) or an ``.onnx`` path; None: the default.
    :param threshold: a cosine overriding the model's calibrated thresholds (for experiments;
        None keeps them).
    :param margin: added to every threshold the model calibrated, as ``--margin`` (-0.2 to
        0.2; positive: fewer strangers let in, the enrolled voice refused more often). Not with
        ``threshold``.
    :param rate_hz: the sample rate of the arrays :meth:`feed` gets (8000 to 192000 Hz).
    :param threads: onnxruntime threads (None: the CLI's default).
    """

    def __init__(self, names: Iterable[str] | None = None, *,
                 store: str | os.PathLike | None = None, model: str | os.PathLike | None = None,
                 threshold: float | None = None, margin: float | None = None,
                 rate_hz: int = SAMPLE_RATE_HZ, threads: int | None = None) -> None:
        from .config import check_decision, check_threshold
        from .core.encoder import DEFAULT_MODEL, EncoderSession
        from .core.pipeline import Verifier
        from .store import open_store

        if threshold is not None:
            try:
                threshold = check_threshold(float(threshold))
            except (TypeError, ValueError, OverflowError):  # OverflowError: an int of 10**400
                raise InputError(f"threshold {threshold!r}: must be a cosine between -1 and "
                                 "1") from None
        try:
            threshold, margin = check_decision(threshold, margin)
        except ValueError as err:
            raise InputError(str(err)) from None
        for what, value in (("store", store), ("model", model)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise InputError(f"{what} {value!r}: give a path or a name as text, or None for "
                                 "the default")
        self.rate_hz = _check_rate(rate_hz, "rate_hz")
        self.threshold = threshold
        self.margin = margin
        self.store = open_store(os.fspath(store) if store is not None else None)
        self.session = EncoderSession(model if model is not None else DEFAULT_MODEL,
                                      threads=threads)
        if isinstance(names, (str, bytes)):  # one name, not its characters (nor bytes)
            names = [names]
        names = _as_list(names, "names", "a voice name or a list of them") \
            if names is not None else None
        if names is not None and not names:
            raise InputError("names: give at least one voice, or None for every voice")
        voices, self.problems = self.store.load_usable(self.session.model_id, names,
                                                       self.session.dim,
                                                       self.session.companion_ids)
        if not voices:
            raise StoreError(f"no usable voice enrolled in {self.store.root}; enroll one first "
                             "(rtverify enroll --name NAME [--input FILE ...])")
        self._verifier = Verifier(self.session, voices, threshold=threshold, margin=margin)
        self._stream = ArrayStream(self.rate_hz)

    @property
    def voices(self) -> list[str]:
        """The names listened for."""
        return sorted(self._verifier.voiceprints)

    @property
    def model_id(self) -> str:
        return self.session.model_id

    def feed(self, samples) -> list[Event]:
        """Take the next block of the stream (any length; int16, int32 or float at full scale
        1.0, mono ``(n,)`` or ``(n, channels)``, at ``rate_hz``) and return the events it
        completed: an utterance is decided at its end, within a few milliseconds."""
        events = []
        for chunk in self._stream.push(samples):
            events.extend(self._verifier.push(chunk))
        return events

    def finish(self) -> list[Event]:
        """End the stream: the utterance still open is decided. Feeding again starts a new
        stream (times from 0 again)."""
        events = []
        tail = self._stream.finish()
        if tail is not None:
            events.extend(self._verifier.push(tail))
        events.extend(self._verifier.finish())
        self._stream = ArrayStream(self.rate_hz)
        return events

    def microphone(self, device: int | str | None = None, *,
                   retries: int | None = None) -> Iterator[Event]:
        """Listen at a microphone as ``rtverify listen`` does: opens it now (the default input,
        or ``device``: an index or part of a name, see ``rtverify devices``; a device that
        cannot be opened is a :class:`~rtverify.errors.DeviceError` here) and returns the
        events as they come, reopening the device when it stops delivering audio (``input_lost``
        / ``input_restored`` events; ``retries`` attempts per outage, None: for ever). Ctrl-C
        ends it after the utterance under way is decided; breaking out of the loop closes the
        device. One stream at a time: it starts afresh, and :meth:`feed` after it does too."""
        from .io.inputs import InputSpec

        if retries is not None and (isinstance(retries, bool) or
                                    not isinstance(retries, (int, np.integer)) or retries < 0):
            # (checked now: a "3" had been a TypeError at the first outage, mid-stream)
            raise InputError(f"retries {retries!r}: give a whole number of attempts (0 or "
                             "more), or None to retry for ever")
        source = InputSpec(device=device, reconnect=True, retries=retries).open()
        self._verifier.reset()
        self._stream = ArrayStream(self.rate_hz)

        def events() -> Iterator[Event]:
            try:
                try:
                    yield from self._verifier.process(source)  # ends with finish()
                except KeyboardInterrupt:
                    yield from self._verifier.finish()
            finally:
                source.close()
                self._verifier.reset()

        return events()

    def verify(self, name: str, audio, rate_hz: int | None = None, *,
               timeout_s: float | None = None) -> VerifyResult:
        """One decision, as ``rtverify verify``: is ``audio`` (a recording's path, or an array
        as :meth:`feed` takes at ``rate_hz``, default this listener's) the enrolled voice
        ``name``? Any enrolled voice may be named, not only those listened for. Raises
        :class:`~rtverify.errors.NotEnoughSpeech` when it holds too little speech to decide.
        A recording or array is read to its end, so ``timeout_s`` (``verify --timeout``, which
        bounds the wait for speech at a microphone) has nothing to bound here; it is accepted
        and ignored, as it always was."""
        from .apps.verify import verify

        vp = self.store.load(name, self.session.model_id, self.session.dim)
        if isinstance(audio, (str, os.PathLike)):
            source = FileSource(audio)
            where = os.fspath(audio)
        else:
            stream = ArrayStream(rate_hz if rate_hz is not None else self.rate_hz)
            source, where = as_source(_and_tail(stream, stream.push(audio))), "audio"
        try:
            return verify(self.session, vp, source, where, live=False,
                          threshold=self.threshold, margin=self.margin)
        finally:
            source.close()

    def enroll(self, name: str, recordings: Iterable, rate_hz: int | None = None, *,
               force: bool = False, add: bool = False, vouch: bool = False):
        """Enrol ``name`` from ``recordings`` (paths, or arrays as :meth:`feed` takes at
        ``rate_hz``, default this listener's), each one take, as ``rtverify enroll --input``
        does: the same checks (3 s of speech, one voice per recording, takes that sound alike)
        and one-line errors, nothing written unless it succeeds. ``force`` replaces an
        enrolled voice; ``add`` adds the takes to it (``enroll --add``; ``vouch``: ``--vouch``).
        Returns the :class:`~rtverify.store.voiceprints.Voiceprint` written. The voices this
        listener listens for stay those it was made with: make a new Listener to hear it."""
        import tempfile

        import soundfile as sf

        from .apps.enroll import (ADD_MIN_SPEECH_S, EnrollSettings, enroll_files,
                                  save_enrolment, voice_to_add_to, voice_to_enrol)
        from .errors import RtverifyError
        from .store.voiceprints import validate_name

        name = validate_name(name)
        for flag, value in (("force", force), ("add", add), ("vouch", vouch)):
            if not isinstance(value, (bool, np.bool_)):  # force="no" is true, and replaced
                raise InputError(f"{flag}={value!r}: give True or False")
        if vouch and not add:
            raise InputError("vouch goes with add: it keeps added takes that do not sound like "
                             "the voice as enrolled")
        if add and force:
            raise InputError("add and force: add takes to the enrolled voice, or replace it, "
                             "not both")
        if isinstance(recordings, (str, os.PathLike)):  # one path, not its characters
            recordings = [recordings]
        elif isinstance(recordings, np.ndarray):
            raise InputError("recordings: give a list of recordings (arrays or paths), each one "
                             "take, not one array")
        recordings = _as_list(recordings, "recordings", "a list of recordings (arrays or paths)")
        if not recordings:
            raise InputError("recordings: give at least one recording")
        with tempfile.TemporaryDirectory(prefix="rtverify-enroll-") as tmp:
            try:
                old = voice_to_enrol(self.store, name, force=force, add=add)
                if old is not None:
                    voice_to_add_to(old, self.session)
                paths = []
                for i, rec in enumerate(recordings, 1):
                    if isinstance(rec, (str, os.PathLike)):
                        paths.append(os.fspath(rec))
                        continue
                    rate = _check_rate(rate_hz if rate_hz is not None else self.rate_hz,
                                       f"recording {i}")
                    path = os.path.join(tmp, f"recording {i}.wav")  # NaN: found when read
                    sf.write(path, as_float_block(rec, f"recording {i}"), rate, subtype="FLOAT")
                    paths.append(path)
                enrol = enroll_files(self.session, paths, EnrollSettings(),
                                     min_speech_s=ADD_MIN_SPEECH_S if add else None,
                                     vouched=vouch)
                # (the other models embed the takes again from the files: still here)
                vp, _ = save_enrolment(self.store, self.session, name, enrol, old=old,
                                       force=force, vouched=vouch)
            except RtverifyError as err:  # the caller's words: its arrays, its arguments
                text = re.sub(r"(recording \d+)\.wav", r"\1", str(err).replace(tmp + os.sep, ""))
                raise type(err)(re.sub(r"--(force|add|vouch)\b", r"\1=True", text)) from None
        return vp

    def close(self) -> None:
        self._verifier.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
