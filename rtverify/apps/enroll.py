"""Enrolment: takes of a person's speech -> one voiceprint.

A *take* is one utterance the segmenter finds on a live input, or one whole recording given with
``--input``. Each take is embedded through the same path as ``listen`` (VAD, features, windows)
and the voiceprint is ``l2_normalize(mean(take vectors))`` of the takes that were kept (the
evaluator calibrates thresholds with exactly this definition).

Live takes are checked one by one and refused with a reason a person can act on: too short,
clipped, too quiet, noisy (little above the background noise the segmenter measured before the
take), or not consistent with the takes kept so far ("say it again"). Enrolment ends as soon as
enough takes and enough speech are collected, or at the timeout. Nothing is written here: the
caller saves the voiceprint only when :attr:`Enrolment.done` is true.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from ..core.encoder import EncoderSession, l2_normalize
from ..errors import InputError, NotEnoughSpeech
from ..core.pipeline import Verifier, embed_recording
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
    consistency: float = 0.70
    """A take whose cosine to the mean of the kept takes is below this is refused (cosine).
    Same-speaker takes of the shipped model score about 0.75-0.9, different speakers 0.4-0.7."""
    timeout_s: float = 120.0
    """A live enrolment gives up after this long (seconds)."""


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


@dataclass
class Enrolment:
    """Takes collected so far against what is needed."""

    settings: EnrollSettings
    need_takes: int
    need_speech_s: float
    takes: list[Take] = field(default_factory=list)
    refused: int = 0

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
        """Why a live take is refused (a sentence telling what to do), or None if it is usable."""
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
        cos = self.consistency_of(take)
        if cos is not None and cos < s.consistency:
            return (f"not consistent with the other takes (similarity {cos:.2f}, need "
                    f"{s.consistency:.2f}): say it again, in your usual voice")
        return None

    def offer(self, take: Take) -> str | None:
        """Keep ``take`` if usable; return the reason it was refused otherwise."""
        problem = self.judge(take)
        if problem is None:
            self.takes.append(take)
        else:
            self.refused += 1
        return problem

    def vector(self) -> np.ndarray:
        """The voiceprint: ``l2_normalize(mean(take vectors))``."""
        if not self.takes:
            raise NotEnoughSpeech("no usable speech was collected")
        return l2_normalize(np.mean([t.vector for t in self.takes], axis=0))

    def voiceprint(self, name: str, model_id: str) -> Voiceprint:
        return Voiceprint(name=name, model_id=model_id, embedding=self.vector(), created=utc_now(),
                          speech_s=self.speech_s, n_takes=len(self.takes))

    def shortfall(self) -> str:
        return (f"{len(self.takes)} of {self.need_takes} takes and {self.speech_s:.1f} of "
                f"{self.need_speech_s:.1f} s of speech")


# -- from recordings --------------------------------------------------------------------------
def enroll_files(session: EncoderSession, paths: Sequence[str | os.PathLike],
                 settings: EnrollSettings = EnrollSettings(), *,
                 min_speech_s: float | None = None) -> Enrolment:
    """Each recording is one take (all its utterances pooled, as ``verify`` does).

    Raises :class:`NotEnoughSpeech` if a recording holds no speech or all of them hold less than
    ``min_speech_s`` (default ``settings.file_min_speech_s``), and :class:`InputError` if one does
    not sound like the others (a wrong file is far likelier than a changed voice).
    """
    need = settings.file_min_speech_s if min_speech_s is None else min_speech_s
    enrol = Enrolment(settings, need_takes=len(paths), need_speech_s=need)
    advice: list[str] = []  # said only if the enrolment succeeds (an error stays one line)
    for path in paths:
        rec = embed_recording(session, FileSource(path))
        name = os.fspath(path)
        if rec.vector is None:
            raise NotEnoughSpeech(f"{name}: no speech found in the recording")
        levels = [d.level_dbfs for d in rec.decisions]
        take = Take(rec.vector, rec.speech_s, float(np.mean(levels)) if levels else -120.0,
                    rec.clipped, name)
        if take.clipped:
            advice.append(f"{name}: the recording is clipped; the voiceprint may suffer")
        if take.level_dbfs < settings.quiet_dbfs:
            advice.append(f"{name}: the speech is very quiet ({take.level_dbfs:.0f} dBFS)")
        enrol.takes.append(take)
    if len(enrol.takes) >= 2:
        cos = []
        for i, take in enumerate(enrol.takes):
            others = [t.vector for j, t in enumerate(enrol.takes) if j != i]
            cos.append(float(np.dot(take.vector, l2_normalize(np.mean(others, axis=0)))))
        worst = int(np.argmin(cos))
        if cos[worst] < settings.consistency:
            what = (f"{enrol.takes[0].source} and {enrol.takes[1].source} do not sound like the "
                    "same speaker" if len(enrol.takes) == 2 else
                    f"{enrol.takes[worst].source}: does not sound like the other recordings")
            raise InputError(f"{what} (similarity {cos[worst]:.2f}, need "
                             f"{settings.consistency:.2f}); enroll one speaker at a time")
    if enrol.speech_s < need:
        names = ", ".join(os.fspath(p) for p in paths)
        raise NotEnoughSpeech(f"{names}: {'holds' if len(paths) == 1 else 'hold'} "
                              f"{enrol.speech_s:.1f} s of speech, {need:.1f} s are needed "
                              "(--min-speech)")
    for line in advice:
        logger.warning("%s", line)
    return enrol


# -- from a live input ------------------------------------------------------------------------
class EnrollView(Protocol):
    """What a live enrolment reports to (the rich progress view, or a test)."""

    def level(self, status: Status) -> None: ...

    def speaking(self, start_s: float) -> None: ...

    def take(self, take: Take, problem: str | None, enrol: Enrolment) -> None: ...


def enroll_live(session: EncoderSession, source: FrameSource | Iterable[Chunk],
                settings: EnrollSettings,
                view: EnrollView | None = None, *, min_speech_s: float | None = None,
                takes: int | None = None, clock: Callable[[], float] = time.monotonic
                ) -> Enrolment:
    """Collect takes from a stream (a microphone, or any chunk source) until enough are usable
    or ``settings.timeout_s`` passes. Check :attr:`Enrolment.done` on the result."""
    enrol = Enrolment(settings, settings.takes if takes is None else takes,
                      settings.min_speech_s if min_speech_s is None else min_speech_s)
    verifier = Verifier(session, {}, max_pending=1, provisional=False, status_every_s=0.1)
    deadline = clock() + settings.timeout_s
    # The segmenter's floor is a low quantile of the last few seconds, so it creeps up while
    # someone talks; the background is the lowest floor of the last FLOOR_MEMORY_S.
    floors: deque[float] = deque(maxlen=int(FLOOR_MEMORY_S / 0.1))
    floor_dbfs = verifier.noise_floor_dbfs
    for event in verifier.process(source):
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
                        snr_db=event.level_dbfs - floor_dbfs)
            problem = enrol.offer(take)
            logger.debug("take %s: %.2f s, %.1f dBFS, SNR %.1f dB -> %s", take.source,
                         take.speech_s, take.level_dbfs, take.snr_db, problem or "kept")
            if view is not None:
                view.take(take, problem, enrol)
        if enrol.done or clock() > deadline:
            break
    return enrol
