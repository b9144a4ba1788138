"""Enrolment: takes of a person's speech -> one voiceprint.

A *take* is one utterance the segmenter finds on a live input, or one whole recording given with
``--input``. Each take is embedded through the same path as ``listen`` (VAD, features, windows)
and the voiceprint is ``l2_normalize(mean(take vectors))`` of the takes that were kept (the
evaluator calibrates thresholds with exactly this definition).

Live takes are checked one by one and refused with a reason a person can act on: too short,
clipped, too quiet, noisy (little above the background noise the segmenter measured before the
take). Takes that pass are then weighed against each other: the voiceprint is made from the
*consistent majority* (the largest group of takes that sound alike), so a first take that caught
another voice does not decide who counts; a take outside the majority is set aside with a
message that says so without blaming the speaker, and enrolment goes on. When two takes disagree
and nothing yet tells which is right, the later one waits for another take. Enrolment ends as
soon as enough takes and enough speech are collected, or at the timeout. Nothing is written
here: the caller saves the voiceprint only when :attr:`Enrolment.done` is true.

From recordings, each file is one take; a recording in which the segmenter finds a change of
speaker, or whose utterances sound like different people, is refused naming the file and the
times, and a recording unlike the others is named.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from ..core.encoder import EncoderSession, l2_normalize
from ..errors import InputError, ModelError, NotEnoughSpeech
from ..core.pipeline import Verifier, embed_recording, speech_weighted
from ..events import DecisionEvent, SpeechStarted, Status
from ..io.sources import Chunk, FileSource, FrameSource
from ..store.voiceprints import Voiceprint, utc_now

logger = logging.getLogger(__name__)

FLOOR_MEMORY_S = 10.0
"""The background level of a take is the lowest noise floor of this much audio before it (s)."""
FLOOR_SETTLE_S = 1.0
"""Stream time after which the segmenter's floor reflects the input, not its prior (s)."""


@dataclass(frozen=True)
class EnrollSettings:
    """What a usable enrolment is. Defaults: a person meets them in about 30 s of talking."""

    takes: int = 3
    """Usable takes (utterances) needed from a live input (count)."""
    min_speech_s: float = 10.0
    """Voiced speech needed in total from a live input (seconds)."""
    file_min_speech_s: float = 3.0
    """Voiced speech needed in total from ``--input`` recordings (seconds): recordings are
    usually chosen with care, and the bundled demo takes hold 4 s."""
    min_take_s: float = 1.0
    """A live take with less voiced speech is refused as too short (seconds)."""
    quiet_dbfs: float = -45.0
    """A take whose voiced frames average below this is too quiet (dB relative to full scale)."""
    min_snr_db: float = 15.0
    """A take less than this far above the background noise floor is noisy (decibels)."""
    consistency: float | None = None
    """A take whose cosine to the mean of the kept takes is below this is refused (cosine).
    None: the model's own bar (:meth:`for_model`: the sidecar's ``enrolment.consistency``, else
    :data:`CONSISTENCY`): cosines are each model's own scale."""
    voices_bar: float | None = None
    """Parts of one recording, or the recordings of one enrolment, are different speakers when
    their voices' mean embeddings are under this apart (cosine; :func:`unlike_the_rest`, for
    ``enroll --input`` and ``verify``). None: the model's own (:meth:`for_model`: the sidecar's
    ``enrolment.voices_bar``, else the consistency bar). Higher than the bar for one live take
    against the others: a mean over several seconds of one voice wavers less than a 3 s take
    (stop 28: 0.80 for the default, ``python -m tools.voices_check --bar``)."""
    timeout_s: float = 120.0
    """A live enrolment gives up after this long (seconds)."""


    def for_model(self, session: EncoderSession) -> "EnrollSettings":
        """These settings with the model's own bars where none was set."""
        if self.consistency is not None and self.voices_bar is not None:
            return self
        block = session.info.raw.get("enrolment") or {}
        try:
            bar = self.consistency if self.consistency is not None else \
                float(block.get("consistency", CONSISTENCY))
            voices = self.voices_bar if self.voices_bar is not None else \
                float(block.get("voices_bar", bar))
            for b in (bar, voices):
                if not -1.0 < b < 1.0:
                    raise ValueError(f"{b} is not a cosine bar in (-1, 1)")
        except (TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"{session.path}: invalid enrolment block in its sidecar "
                             f"({err})") from None
        return dataclasses.replace(self, consistency=bar, voices_bar=voices)


CONSISTENCY = 0.70
"""The default LSTM's consistency bar (cosine): on LibriSpeech 3 s crops (251 speakers, two
crops of one recording each) no same-speaker pair falls below it and 3.2 % of different-speaker
pairs reach it. A model's sidecar may carry its own (``enrolment.consistency``; CAM++'s 0.40:
0.4 % and 0.25 %, see docs/history.md, "Enrolment bars per model")."""


@dataclass(frozen=True)
class Take:
    """One piece of enrolment speech."""

    vector: np.ndarray
    """Unit embedding, float32 ``(dim,)``."""
    speech_s: float
    """Voiced speech in it (seconds)."""
    level_dbfs: float
    """Mean level of its voiced frames (dB relative to full scale)."""
    clipped: bool
    source: str
    """Where it came from: a file name, or the stream time of a live take."""
    snr_db: float | None = None
    """Level above the noise floor measured before it (decibels); None for recordings."""
    narrowband: np.ndarray | None = None
    """Unit embedding of the same audio low-passed to the 8 kHz telephone band (float32
    ``(dim,)``), for band-matched scoring; None if it could not be made."""
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The take's samples (float32, 16 kHz), kept until the voiceprint is made so that the
    other shipped models can embed the same speech; None if not kept."""
    replay: Callable[[], Iterable[Chunk]] | None = field(default=None, repr=False, compare=False)
    """For a recording: reads its chunks afresh (the file is streamed again, never held whole
    in memory), instead of :attr:`audio`."""
    fall_db: float | None = None
    """How steeply its speech fell silent (:func:`rtverify.core.scoring.fall_db`; None:
    unknown): the voiceprint keeps the takes' mean, the room it was enrolled in."""

    def chunks(self) -> Iterable[Chunk] | None:
        """The take's audio as chunks (:attr:`replay` or :attr:`audio`), None if not kept."""
        if self.replay is not None:
            return self.replay()
        if self.audio is None or len(self.audio) == 0:
            return None
        return [Chunk(self.audio, 0.0)]


@dataclass
class Enrolment:
    """Takes collected so far against what is needed."""

    settings: EnrollSettings
    need_takes: int
    need_speech_s: float
    takes: list[Take] = field(default_factory=list)
    """The takes the voiceprint is made from (the consistent majority)."""
    refused: int = 0
    pool: list[Take] = field(default_factory=list)
    """Every live take that passed the quality checks, in order."""
    set_aside: list[tuple[Take, str]] = field(default_factory=list)
    """Takes left out of the majority, with the sentence that told the person so."""
    voice: Voiceprint | None = None
    """With ``enroll --add``: the enrolled voice (as the session's model sees it) that every
    take must sound like, at the consistency bar."""
    vouched: bool = False
    """With ``enroll --add --vouch``: the person vouches that the takes are the enrolled voice's
    (in another mood, whispering, hoarse), so a take under the consistency bar against
    :attr:`voice` is kept, with a warning, instead of refused."""

    def __post_init__(self) -> None:
        if self.settings.consistency is None:  # no model given: the default LSTM's bar
            self.settings = dataclasses.replace(self.settings, consistency=CONSISTENCY)

    @property
    def speech_s(self) -> float:
        return sum(t.speech_s for t in self.takes)

    @property
    def done(self) -> bool:
        return len(self.takes) >= self.need_takes and self.speech_s >= self.need_speech_s - 1e-9

    def consistency_of(self, take: Take) -> float | None:
        """Cosine of ``take`` to the mean of the kept takes (None when none is kept)."""
        if not self.takes:
            return None
        return float(np.dot(take.vector, l2_normalize(np.mean([t.vector for t in self.takes], 0))))

    def judge(self, take: Take) -> str | None:
        """Why a live take is refused (a sentence telling what to do), or None if it is usable
        (its quality, then its consistency with the kept takes)."""
        problem = self.judge_quality(take)
        if problem is not None:
            return problem
        cos = self.consistency_of(take)
        s = self.settings
        if cos is not None and cos < s.consistency:
            return (f"not consistent with the other takes (similarity {cos:.2f}, need "
                    f"{s.consistency:.2f}): say it again")
        return None

    def judge_quality(self, take: Take) -> str | None:
        """Why a live take is unusable on its own (too short, clipped, quiet, noisy), or None."""
        s = self.settings
        if take.speech_s < s.min_take_s:
            return (f"too short ({take.speech_s:.1f} s of speech, need {s.min_take_s:.1f} s): "
                    "say a whole sentence")
        if take.clipped:
            return "clipped (too loud): move back from the microphone or lower its gain"
        if take.level_dbfs < s.quiet_dbfs:
            return (f"too quiet ({take.level_dbfs:.0f} dBFS, need {s.quiet_dbfs:.0f}): speak up "
                    "or move closer to the microphone")
        if take.snr_db is not None and take.snr_db < s.min_snr_db:
            return (f"noisy (speech only {take.snr_db:.0f} dB above the background, need "
                    f"{s.min_snr_db:.0f} dB): find a quieter place")
        return None

    def judge_against_voice(self, take: Take) -> str | None:
        """Why a take cannot be added to :attr:`voice` (it does not sound like it), or None."""
        if self.voice is None:
            return None
        cos = float(np.dot(take.vector, self.voice.embedding))
        if cos >= self.settings.consistency:
            return None
        if self.vouched:
            logger.warning("take at %s: similarity %.2f to %r as enrolled, under the bar %.2f; "
                           "kept, as you vouched (--vouch)", take.source, cos, self.voice.name,
                           self.settings.consistency)
            return None
        return (f"does not sound like {self.voice.name!r} as enrolled (similarity {cos:.2f}, need "
                f"{self.settings.consistency:.2f}; perhaps another voice or a noise was picked "
                "up): say it again (or, if it is you in another mood or voice, run with "
                "--vouch)")

    def _majority(self) -> list[int] | None:
        """Indices into :attr:`pool` of the consistent majority, or None if there is none yet
        (two takes that disagree, with nothing to tell which is right)."""
        pool = self.pool
        if len(pool) < 2:
            return list(range(len(pool))) or None
        # the takes as voices (two people taking turns too: each take against the mean of the
        # others, a blend holding its own voice, let them all through until stop 27)
        found = unlike_the_rest(np.stack([t.vector for t in pool]), np.ones(len(pool)),
                                self.settings.consistency)
        group = [i for i in range(len(pool)) if found is None or i not in found[0]]
        return group if 2 * len(group) > len(pool) else None

    def offer(self, take: Take) -> str | None:
        """Weigh ``take``; return None if it is kept, else why not (a sentence to show).

        Takes set aside on the way (an earlier take outside the new majority) are appended to
        :attr:`set_aside` with their message.
        """
        problem = self.judge_quality(take) or self.judge_against_voice(take)
        if problem is not None:
            self.refused += 1
            return problem
        self.pool.append(take)
        group = self._majority()
        s = self.settings
        if group is None:  # no majority: keep what was kept, and let this take wait
            self.refused += 1
            other = self.takes[0].source if self.takes else "the first take"
            cos = self.consistency_of(take)
            return (f"not consistent with the take at {other} (similarity {cos:.2f}, need "
                    f"{s.consistency:.2f}); one of the two may have picked up another voice or "
                    "a noise: say it again, and the takes that agree will be kept")
        kept = [self.pool[i] for i in group]
        for old in self.takes:
            if not any(old is t for t in kept):
                note = (f"the take at {old.source} was set aside: it sounds unlike the other "
                        "takes (perhaps another voice or a noise was picked up); nothing to "
                        "repeat")
                self.set_aside.append((old, note))
                logger.info("%s", note)
        self.takes = kept
        if any(take is t for t in kept):
            return None
        self.refused += 1
        cos = self.consistency_of(take)
        note = (f"set aside: it sounds unlike the other takes (similarity {cos:.2f}, need "
                f"{s.consistency:.2f}; perhaps another voice or a noise was picked up); "
                "please go on")
        self.set_aside.append((take, note))
        return note

    def vector(self) -> np.ndarray:
        """The voiceprint: ``l2_normalize(mean(take vectors))``."""
        if not self.takes:
            raise NotEnoughSpeech("no usable speech was collected")
        return l2_normalize(np.mean([t.vector for t in self.takes], axis=0))

    def narrowband_vector(self) -> np.ndarray | None:
        """The narrowband voiceprint: ``l2_normalize(mean(take narrowband vectors))``; None unless
        every kept take has one."""
        if not self.takes or any(t.narrowband is None for t in self.takes):
            return None
        return l2_normalize(np.mean([t.narrowband for t in self.takes], axis=0))

    def fall_db(self) -> float | None:
        """The kept takes' steepest fall, weighted by their speech (None if none is known)."""
        return speech_weighted((t.fall_db, t.speech_s) for t in self.takes)

    def voiceprint(self, name: str, model_id: str,
                   companions: Sequence[EncoderSession] = ()) -> Voiceprint:
        """The voiceprint of the kept takes; with ``companions`` (other models' sessions, see
        :func:`companion_sessions`) it also holds their embeddings of the same takes."""
        models, falls = {}, {}
        for other in companions:
            made = _companion_vectors(other, self.takes)
            if made is not None:
                models[other.model_id] = made[:2]
                if made[2] is not None:
                    falls[other.model_id] = made[2]
        own = self.fall_db()
        if own is not None:
            falls[model_id] = own
        return Voiceprint(name=name, model_id=model_id, embedding=self.vector(), created=utc_now(),
                          speech_s=self.speech_s, n_takes=len(self.takes),
                          narrowband=self.narrowband_vector(), models=models or None,
                          fall_db=falls or None)

    def shortfall(self) -> str:
        return (f"{len(self.takes)} of {self.need_takes} takes and {self.speech_s:.1f} of "
                f"{self.need_speech_s:.1f} s of speech")


# -- from recordings --------------------------------------------------------------------------
SAME_TAKE = 0.99999
"""Takes whose embeddings are this alike are one recording given twice (different recordings
measured at most 0.990: two overlapping 3 s crops of one LibriSpeech utterance; one Arabic
keyword said again by its speaker at most 0.979; identical audio 1.0)."""


def enroll_files(session: EncoderSession, paths: Sequence[str | os.PathLike],
                 settings: EnrollSettings = EnrollSettings(), *,
                 min_speech_s: float | None = None, vouched: bool = False) -> Enrolment:
    """Each recording is one take (all its utterances pooled, as ``verify`` does).

    Raises :class:`NotEnoughSpeech` if a recording holds no speech or all of them hold less than
    ``min_speech_s`` (default ``settings.file_min_speech_s``), and :class:`InputError` if one does
    not sound like the others (a wrong file is far likelier than a changed voice); with
    ``vouched`` (``enroll --add --vouch``: the person says they are all theirs, in other moods or
    voices) that is a warning instead. A recording that holds several voices is refused always,
    and so is one given twice (:data:`SAME_TAKE`).
    """
    settings = settings.for_model(session)
    need = settings.file_min_speech_s if min_speech_s is None else min_speech_s
    enrol = Enrolment(settings, need_takes=len(paths), need_speech_s=need)
    advice: list[str] = []  # said only if the enrolment succeeds (an error stays one line)
    for path in paths:
        # Every pass streams the file afresh: an hour-long recording is never held whole (it
        # was, as a list of chunks, since band-matched scoring: 300 MB for an hour at 8 kHz).
        def replay(path=path) -> FileSource:
            return FileSource(path)

        rec = embed_recording(session, replay())
        name = os.fspath(path)
        if rec.vector is None:
            raise NotEnoughSpeech(f"{name}: no speech found in the recording")
        same = next((t for t in enrol.takes if float(t.vector @ rec.vector) > SAME_TAKE), None)
        if same is not None:  # (its speech counted twice had passed --min-speech: 2.2 s as 4.4)
            raise InputError(f"{name}: the same recording as {same.source}; give each take "
                             "once")
        voices = recording_voices(session, replay(), settings.voices_bar)
        if voices is not None:
            raise InputError(f"{name}: holds more than one voice ({voices}); enroll from a "
                             "recording of one speaker")
        levels = [d.level_dbfs for d in rec.decisions]
        take = Take(rec.vector, rec.speech_s, float(np.mean(levels)) if levels else -120.0,
                    rec.clipped, name, narrowband=_narrowband_vector(session, replay()),
                    replay=replay, fall_db=rec.fall_db)
        if take.clipped:
            advice.append(f"{name}: the recording is clipped; the voiceprint may suffer")
        if take.level_dbfs < settings.quiet_dbfs:
            advice.append(f"{name}: the speech is very quiet ({take.level_dbfs:.0f} dBFS)")
        enrol.takes.append(take)
    if len(enrol.takes) >= 2:  # the files, as voices: two files of each of two people too
        found = unlike_the_rest(np.stack([t.vector for t in enrol.takes]),
                                np.ones(len(enrol.takes)), settings.voices_bar)
        if found is not None:
            odd, worst = found
            names = [enrol.takes[i].source for i in odd]
            what = (f"{enrol.takes[0].source} and {enrol.takes[1].source} do not sound like the "
                    "same speaker" if len(enrol.takes) == 2 else
                    f"{names[0]}: does not sound like the other recordings" if len(odd) == 1
                    else f"{', '.join(names)} do not sound like the other recordings")
            if vouched:
                logger.warning("%s (similarity %.2f, under %.2f); kept, as you vouched "
                               "(--vouch)", what, worst, settings.voices_bar)
            else:
                raise InputError(f"{what} (similarity {worst:.2f}, need "
                                 f"{settings.voices_bar:.2f}); enroll one speaker at a time, each "
                                 "in their usual voice")
    if enrol.speech_s < need:
        names = ", ".join(os.fspath(p) for p in paths)
        raise NotEnoughSpeech(f"{names}: {'holds' if len(paths) == 1 else 'hold'} "
                              f"{enrol.speech_s:.1f} s of speech, {need:.1f} s are needed "
                              "(--min-speech)")
    for line in advice:
        logger.warning("%s", line)
    return enrol


# -- adding takes to an enrolled voice ----------------------------------------------------------
def voice_to_enrol(store, name: str, *, force: bool = False,
                   add: bool = False) -> Voiceprint | None:
    """What enrolling ``name`` starts from, checked before any audio is read, the same for the
    CLI, ``serve`` and :mod:`rtverify.api` (each puts the options in its own words): with
    ``add`` the stored voice (a voice not enrolled is the error), else None, refusing a voice
    already enrolled unless ``force``."""
    from ..errors import StoreError

    if add:
        return store.load(name)
    if not force and store.exists(name):
        raise StoreError(f"voice {name!r} is already enrolled ({store.path_for(name)}); "
                         "use --force to replace it, or --add to add takes to it")
    return None


def voice_to_add_to(old: Voiceprint, session: EncoderSession) -> Voiceprint:
    """``old`` as ``session``'s model sees it (:meth:`Voiceprint.for_model`); a
    :class:`StoreError` if it holds no vector of that model (enrolled with a model this
    installation does not ship: it must be re-enrolled, not added to)."""
    from ..errors import StoreError

    view = old.for_model(session.model_id)
    if view is None:
        raise StoreError(f"voice {old.name!r} was enrolled with model {old.model_id}, which holds "
                         f"no vector for {session.model_id}; re-enroll it with --force instead "
                         "of adding to it")
    return view


def add_to_voiceprint(old: Voiceprint, enrol: Enrolment, session: EncoderSession,
                      companions: Sequence[EncoderSession] = (), *,
                      vouched: bool = False) -> Voiceprint:
    """``old`` with ``enrol``'s takes added (``enroll --add``): every vector it holds becomes
    ``l2_normalize(n_old * old + sum(new take vectors))``, the mean it would be had all the takes
    been enrolled together (the old takes' spread is not kept, so each old take counts as the
    voiceprint itself); speech and takes add up, the enrolment's room (``fall_db``) is their
    speech-weighted mean, and ``created`` stays the first enrolment's.

    Refused (:class:`InputError`, nothing changes) when a new take does not sound like the
    enrolled voice: under the model's consistency bar, the bar a live take must meet against the
    others; with ``vouched`` (``--vouch``: the person says the takes are theirs, in another mood
    or voice) such a take is added with a warning. A voice that holds no vector of ``session``'s
    model is refused too (it was enrolled with a model this installation does not ship:
    re-enroll it)."""
    from .. import __version__

    view = voice_to_add_to(old, session)
    bar = enrol.settings.consistency
    for take in enrol.takes:
        cos = float(np.dot(take.vector, view.embedding))
        if cos < bar and vouched:
            logger.warning("%s: similarity %.2f to %r as enrolled, under the bar %.2f; added, "
                           "as you vouched (--vouch)", take.source, cos, old.name, bar)
        elif cos < bar:
            raise InputError(f"{take.source}: does not sound like {old.name!r} as enrolled "
                             f"(similarity {cos:.2f}, need {bar:.2f}); nothing was added (if "
                             "it is them in another mood or voice, add it with --vouch)")
    n_old, n_new = max(int(view.n_takes), 1), len(enrol.takes)

    def merged(old_vec: np.ndarray | None, new_mean: np.ndarray | None) -> np.ndarray | None:
        if old_vec is None:
            return None  # a vector only the new takes have would not be the whole voice
        if new_mean is None:
            return old_vec
        return l2_normalize(n_old * old_vec + n_new * new_mean).astype(np.float32)

    models = {}
    made = {other.model_id: _companion_vectors(other, enrol.takes) for other in companions}
    for mid, (emb, nb) in (view.models or {}).items():
        new = made.get(mid)
        models[mid] = (merged(emb, None if new is None else new[0]),
                       merged(nb, None if new is None else new[1]))
    falls = dict(view.fall_db or {})
    speech_old, speech_new = float(view.speech_s), enrol.speech_s
    for mid, new_fall in [(session.model_id, enrol.fall_db())] + \
            [(mid, m[2]) for mid, m in made.items() if m is not None]:
        if mid in falls or mid == session.model_id:
            pooled = speech_weighted([(falls.get(mid), speech_old), (new_fall, speech_new)])
            if pooled is not None:
                falls[mid] = pooled
    added = dataclasses.replace(
        view, embedding=merged(view.embedding, enrol.vector()),
        narrowband=merged(view.narrowband, enrol.narrowband_vector()),
        models=models or None, fall_db=falls or None, speech_s=speech_old + speech_new,
        n_takes=n_old + n_new, rtverify_version=__version__)
    return added.for_model(old.model_id)


ADD_MIN_SPEECH_S = 1.0
"""Speech ``enroll --add`` needs by default (seconds): the voice already holds an enrolment's
worth; one sentence from a new room or microphone is worth adding."""


def save_added(store, old: Voiceprint, vp: Voiceprint):
    """Write ``vp`` over ``old`` unless the stored voice changed since ``old`` was read (another
    enrolment, ``--add`` or removal in between): then nothing is written and the error says so,
    so that neither change is silently lost. The store checks and writes in one step (its write
    lock, or one transaction), so two adds at once (threads, processes or fleet instances)
    cannot both pass."""
    from ..errors import StoreError
    from ..store.voiceprints import VoiceChanged

    try:
        return store.save(vp, force=True, replacing=old)
    except VoiceChanged as err:
        what = "removed" if err.removed else "changed"
        raise StoreError(f"voice {old.name!r} was {what} while takes were being added; "
                         "nothing was saved (run the command again)") from None


def save_enrolment(store, session: EncoderSession, name: str, enrol: Enrolment, *,
                   old: Voiceprint | None = None, force: bool = False,
                   vouched: bool = False) -> tuple[Voiceprint, object]:
    """Save what ``enrol`` collected as ``name``'s voice (every shipped model's vectors): a new
    voice (``force`` replaces one), or with ``old`` (the stored voice, read before the takes
    were collected) the takes added to it (``enroll --add``; ``vouched``: ``--vouch``). Returns
    the voiceprint written and where."""
    companions = companion_sessions(session)
    if old is None:
        vp = enrol.voiceprint(name, session.model_id, companions)
        return vp, store.save(vp, force=force)
    vp = add_to_voiceprint(old, enrol, session, companions, vouched=vouched)
    return vp, save_added(store, old, vp)


_COMPANIONS: dict[str, EncoderSession] = {}


def companion_sessions(session: EncoderSession) -> list[EncoderSession]:
    """Sessions of the shipped models other than ``session``'s (loaded once per process): an
    enrolment embeds its takes with each of them too, so that a voice works under any shipped
    ``--model`` (issue 11)."""
    from ..core.encoder import load_model_info, resolve_model, shipped_models

    out = []
    for name in shipped_models():
        if load_model_info(resolve_model(name)).model_id == session.model_id:
            continue
        if name not in _COMPANIONS:
            _COMPANIONS[name] = EncoderSession(name, threads=session.threads)
        out.append(_COMPANIONS[name])
    return out


def _companion_vectors(session: EncoderSession, takes: Sequence[Take]
                       ) -> tuple[np.ndarray, np.ndarray | None, float | None] | None:
    """Another model's voiceprint vectors (wideband, narrowband) of the same takes, pooled as
    the main one is, and the takes' steepest fall as that model's front-end reads it; None if
    some take's audio was not kept or holds no speech for it."""
    if not takes or any(t.replay is None and (t.audio is None or len(t.audio) == 0)
                        for t in takes):
        return None
    wide, narrow, falls = [], [], []
    for take in takes:
        rec = embed_recording(session, take.chunks())
        if rec.vector is None:
            return None
        wide.append(rec.vector)
        falls.append((rec.fall_db, rec.speech_s))
        narrow.append(_narrowband_vector(session, take.chunks()))
    nb = None if any(v is None for v in narrow) else l2_normalize(np.mean(narrow, axis=0))
    return l2_normalize(np.mean(wide, axis=0)), nb, speech_weighted(falls)


def _narrowband_vector(session: EncoderSession, audio: np.ndarray | Iterable[Chunk]
                       ) -> np.ndarray | None:
    """Embedding of a take's audio (float32 ``(n,)`` at 16 kHz, or its chunks, streamed)
    low-passed to the telephone band, through the same path as live audio."""
    if isinstance(audio, np.ndarray):
        if len(audio) == 0:
            return None
        audio = [Chunk(audio, 0.0)]
    from ..core.scoring import narrowband_chunks

    return embed_recording(session, narrowband_chunks(audio)).vector


class _Recorder:
    """Passes a source's chunks on and keeps the last ``keep_s`` of audio, so that a live take's
    audio can be embedded once more, band-limited."""

    def __init__(self, source: Iterable[Chunk], keep_s: float = 60.0) -> None:
        self.source = source
        self.name = getattr(source, "name", "chunks")
        self.overflows = 0
        self._chunks: deque[Chunk] = deque()
        self._keep_s = keep_s

    def __iter__(self):
        for chunk in self.source:
            self.overflows = getattr(self.source, "overflows", 0)
            self._chunks.append(chunk)
            while self._chunks and self._chunks[0].end_s < chunk.end_s - self._keep_s:
                self._chunks.popleft()
            yield chunk

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def audio(self, start_s: float, end_s: float) -> np.ndarray:
        """The audio between two stream times (float32 at 16 kHz; what is still kept)."""
        from ..config import SAMPLE_RATE_HZ

        parts = []
        for c in self._chunks:
            if c.end_s <= start_s or c.start_s >= end_s:
                continue
            a = max(0, int(round((start_s - c.start_s) * SAMPLE_RATE_HZ)))
            b = min(len(c.samples), int(round((end_s - c.start_s) * SAMPLE_RATE_HZ)))
            parts.append(c.samples[a:b])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


MIN_PART_SPEECH_S = 1.5
"""Parts of a recording with less speech than this are not compared (too little to tell)."""


def recording_voices(session: EncoderSession, chunks: Iterable[Chunk], bar: float
                     ) -> str | None:
    """:func:`several_voices` of a recording, judged utterance by utterance as ``listen`` cuts
    it (a pause is a surer boundary between two people than a change found inside a segment):
    ``enroll --input`` of each file, and ``verify`` of what it accepted."""
    return several_voices(embed_recording(session, chunks, join_pauses=False).decisions, bar)


def several_voices(decisions: Sequence[DecisionEvent], bar: float) -> str | None:
    """Whether a recording's utterances (and turns) are different voices: None if they sound
    like one, else the times that disagree, in words (``"0.0-3.1 s and 3.1-6.0 s sound like
    different speakers (similarity 0.41)"``): :func:`unlike_the_rest` of its parts.

    (Until stop 27 each part was compared with the mean of all the others, which a recording of
    several people in turn, each cut into more than one part, passed: that mean is a blend
    holding the part's own voice. ``python -m tools.voices_check``: docs/history.md, stop 27.)"""
    parts = [d for d in decisions if d.embedding is not None and d.speech_s >= MIN_PART_SPEECH_S]
    if len(parts) < 2:
        return None

    def span(d) -> str:
        return f"{d.start_s:.1f}-{d.end_s:.1f} s"

    found = unlike_the_rest(np.stack([d.embedding for d in parts]),
                            np.array([d.speech_s for d in parts]), bar)
    if found is None:
        return None
    odd, worst = found
    if len(parts) == 2:
        return (f"{span(parts[0])} and {span(parts[1])} sound like different speakers "
                f"(similarity {worst:.2f})")
    shown = ", ".join(span(parts[i]) for i in odd[:4])
    more = f" and {len(odd) - 4} more" if len(odd) > 4 else ""
    return (f"{shown}{more} {'sounds' if len(odd) == 1 else 'sound'} unlike the rest of it "
            f"(similarity {worst:.2f}, need {bar:.2f})")


def voice_groups(vecs: np.ndarray, weights: np.ndarray, bar: float) -> list[list[int]]:
    """Parts (rows of ``vecs``, unit embeddings, each weighted by its speech) grouped into
    voices: starting from one group per part, the two groups whose speech-weighted mean
    embeddings are most alike join while their cosine reaches ``bar``. Lists of row indices,
    in the order of each group's first part (a merge updates one row of the similarities, so
    an hour's recording, over a thousand parts, takes seconds, not hours)."""
    vecs = np.asarray(vecs, np.float64)
    n = len(vecs)
    sums = vecs * np.asarray(weights, np.float64)[:, None]
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    sims = means @ means.T
    np.fill_diagonal(sims, -np.inf)
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}
    gone = np.zeros(n, bool)  # rows merged into another group
    while len(groups) > 1:
        a, b = sorted(np.unravel_index(int(np.argmax(sims)), sims.shape))
        if sims[a, b] < bar:
            break
        groups[a] += groups.pop(b)
        sums[a] += sums[b]
        means[a] = l2_normalize(sums[a])
        gone[b] = True
        sims[b, :] = sims[:, b] = -np.inf
        row = means @ means[a]
        row[gone] = row[a] = -np.inf
        sims[a, :] = sims[:, a] = row
    return [groups[k] for k in sorted(groups)]


def unlike_the_rest(vecs: np.ndarray, weights: np.ndarray, bar: float
                    ) -> tuple[list[int], float] | None:
    """Whether parts (or takes) of what should be one voice are more than one: None if they
    sound like one, else the indices of those set aside and the lowest cosine found.

    The parts are grouped into voices (:func:`voice_groups`), and a group is another voice when
    its mean embedding's cosine to the mean of the parts outside it is under ``bar``; the group
    furthest under it is set aside and the rest judged again, until the rest agree. A group of
    one part is so judged as before stop 27 (against the mean of all the others, so three takes
    of one person 0.72 apart pairwise, 0.78 from the others' mean, still count as one voice),
    but a voice cut into several parts is no longer measured against a mean that holds itself.
    Of the groups under the bar, the one with the least speech is set aside first (of those
    alike, the furthest under it, then the later): three takes of one voice are not set aside
    for two unlike takes of two others, which sit closer to the rest than the three do."""
    vecs = np.asarray(vecs, np.float64)
    weights = np.asarray(weights, np.float64)
    groups = voice_groups(vecs, weights, bar)
    sums = [(vecs[g] * weights[g, None]).sum(axis=0) for g in groups]
    total = np.sum(sums, axis=0)
    odd: list[int] = []
    worst = None
    while len(groups) > 1:
        cos = [float(l2_normalize(own) @ l2_normalize(total - own)) for own in sums]
        if min(cos) >= bar:
            break
        if worst is None:
            worst = min(cos)
        k = min((i for i in range(len(groups)) if cos[i] < bar),
                key=lambda i: (float(weights[groups[i]].sum()), round(cos[i], 9), -i))
        odd += groups.pop(k)
        total = total - sums.pop(k)
    return (sorted(odd), worst) if odd else None


# -- from a live input ------------------------------------------------------------------------
class EnrollView(Protocol):
    """What a live enrolment reports to (the rich progress view, or a test)."""

    def level(self, status: Status) -> None: ...

    def speaking(self, start_s: float) -> None: ...

    def take(self, take: Take, problem: str | None, enrol: Enrolment) -> None: ...

    # optional: ``set_aside(take, note, enrol)``, an earlier take left out of the majority
    # (without it the note is logged as a warning)


def enroll_live(session: EncoderSession, source: FrameSource | Iterable[Chunk],
                settings: EnrollSettings,
                view: EnrollView | None = None, *, min_speech_s: float | None = None,
                takes: int | None = None, clock: Callable[[], float] = time.monotonic,
                voice: Voiceprint | None = None, vouched: bool = False) -> Enrolment:
    """Collect takes from a stream (a microphone, or any chunk source) until enough are usable
    or ``settings.timeout_s`` passes. Check :attr:`Enrolment.done` on the result. With
    ``voice`` (``enroll --add``), a take that does not sound like that enrolled voice is refused
    as it comes, with the reason (with ``vouched``, kept with a warning)."""
    settings = settings.for_model(session)
    enrol = Enrolment(settings, settings.takes if takes is None else takes,
                      settings.min_speech_s if min_speech_s is None else min_speech_s,
                      voice=None if voice is None else voice_to_add_to(voice, session),
                      vouched=vouched)
    verifier = Verifier(session, {}, max_pending=1, provisional=False, status_every_s=0.1)
    deadline = clock() + settings.timeout_s
    # The segmenter's floor is a low quantile of the last few seconds, so it creeps up while
    # someone talks; the background is the lowest floor of the last FLOOR_MEMORY_S.
    floors: deque[float] = deque(maxlen=int(FLOOR_MEMORY_S / 0.1))
    floor_dbfs = verifier.noise_floor_dbfs
    recorder = _Recorder(source)
    for event in verifier.process(recorder):
        if isinstance(event, Status):
            if event.t_s >= FLOOR_SETTLE_S:  # before that the floor is still the segmenter's prior
                floors.append(event.noise_floor_dbfs)
            if view is not None:
                view.level(event)
        elif isinstance(event, SpeechStarted):
            floor_dbfs = min(floors) if floors else verifier.noise_floor_dbfs
            if view is not None:
                view.speaking(event.start_s)
        elif isinstance(event, DecisionEvent) and event.embedding is not None:
            take = Take(event.embedding, event.speech_s, event.level_dbfs, event.clipped,
                        f"{event.start_s:.1f}-{event.end_s:.1f} s",
                        snr_db=event.level_dbfs - floor_dbfs, fall_db=event.fall_db)
            if enrol.judge_quality(take) is None:  # worth a band-limited embedding as well
                audio = recorder.audio(event.start_s, event.end_s)
                take = dataclasses.replace(take, narrowband=_narrowband_vector(session, audio),
                                           audio=audio)
            n_aside = len(enrol.set_aside)
            problem = enrol.offer(take)
            logger.debug("take %s: %.2f s, %.1f dBFS, SNR %.1f dB -> %s", take.source,
                         take.speech_s, take.level_dbfs, take.snr_db, problem or "kept")
            if view is not None:
                view.take(take, problem, enrol)
            for old, note in enrol.set_aside[n_aside:]:
                if old is take:
                    continue  # already said, as this take's problem
                tell = getattr(view, "set_aside", None)  # optional in EnrollView
                if tell is not None:
                    tell(old, note, enrol)
                else:
                    logger.warning("%s", note)
        if enrol.done or clock() > deadline:
            break
    return enrol
