"""``verify``: capture what is said (a recording to its end, or the microphone until a pause) and
decide whether it is one enrolled voice; with a challenge, also whether the digits were said."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..config import SAMPLE_RATE_HZ
from ..core.encoder import EncoderSession
from ..core.pipeline import RecordingEmbedding, Verifier, embed_recording
from ..core.scoring import (Decision, DecisionPolicy, Scorer, voiceprints_for_band,
                            warn_no_narrowband)
from ..errors import InputError, NotEnoughSpeech
from ..events import DecisionEvent, Event
from ..io.sources import Chunk, FrameSource
from ..store.voiceprints import Voiceprint

DEFAULT_TIMEOUT_S = 20.0
"""Microphone: give up when nobody speaks for this long (seconds)."""
PAUSE_S = 1.5
"""Microphone: the answer is over after this much quiet following the first utterance (seconds)."""


LIVE_RECORD_S = 120.0
"""Microphone: how much of what it heard ``verify`` keeps to embed as one recording (seconds);
past that it decides on the live utterances pooled."""


class RecordingSource:
    """A :class:`FrameSource` that passes ``source`` on and keeps its audio (up to ``max_s``
    seconds: with ``refuse``, more is an error (an answer to a challenge is a few seconds);
    without, the rest is passed on but not kept and :attr:`full` says so)."""

    def __init__(self, source: FrameSource, max_s: float, refuse: bool = True) -> None:
        self.source = source
        self.name = source.name
        self.max_s = max_s
        self.refuse = refuse
        self.full = False
        self._audio: list[np.ndarray] = []
        self._n = 0

    @property
    def overflows(self) -> int:
        return self.source.overflows

    @property
    def position_s(self) -> float:
        return self.source.position_s

    @property
    def samples(self) -> np.ndarray:
        """Everything captured, float32 ``(n,)`` at 16 kHz."""
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    def __iter__(self) -> Iterator[Chunk | Event]:
        for item in self.source:
            if isinstance(item, Chunk):
                self._n += len(item.samples)
                if self._n > self.max_s * SAMPLE_RATE_HZ:
                    if self.refuse:
                        raise InputError(f"{self.name}: longer than {self.max_s:g} s; a "
                                         "challenge answer is a few seconds")
                    self.full = True
                if not self.full:
                    self._audio.append(item.samples)
            yield item

    def close(self) -> None:
        self.source.close()


def capture_speech(session: EncoderSession, source: FrameSource, *, live: bool,
                   pause_s: float = PAUSE_S,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> RecordingEmbedding:
    """Everything said in ``source``, pooled into one embedding.

    A recording or stream is read to its end. A live source (the microphone) is read until
    ``pause_s`` of quiet after the first utterance, or for at most ``timeout_s`` seconds when
    nobody speaks. A recording's short pauses do not split it (as in
    :func:`~rtverify.core.pipeline.embed_recording`); a live source keeps the live pause, so
    that the answer comes ``pause_s`` after the speaker stops, and what it heard is then
    embedded as one recording, as a file of the same audio would be (up to
    :data:`LIVE_RECORD_S`)."""
    if not live:
        return embed_recording(session, source)
    recorder = source if isinstance(source, RecordingSource) else \
        RecordingSource(source, LIVE_RECORD_S, refuse=False)
    verifier = Verifier(session, {}, max_pending=1, provisional=False, bands=True,
                        status_every_s=0.1)
    decisions: list[DecisionEvent] = []
    deadline = time.monotonic() + timeout_s
    for event in verifier.process(recorder):
        if isinstance(event, DecisionEvent):
            decisions.append(event)
        quiet = (decisions and not verifier.in_speech
                 and verifier.position_s - decisions[-1].end_s >= pause_s)
        if quiet or (not decisions and time.monotonic() > deadline):
            break
    pooled = RecordingEmbedding.pool(decisions, session.dim)
    if not recorder.full and pooled.vector is not None:
        whole = embed_recording(session, [Chunk(recorder.samples, 0.0)])
        if whole.vector is not None:
            return whole
    return pooled


@dataclass(frozen=True)
class VerifyResult:
    """One decision on whether a recording (or whoever spoke) is ``voiceprint``."""

    recording: RecordingEmbedding
    decision: Decision
    accepted: bool
    """The voice was accepted, and the challenge (if any) answered."""
    reason: str
    """The decision's reason, or ``wrong_challenge``."""
    challenge: dict = field(default_factory=dict)
    """With a challenge: ``challenge``, ``heard``, ``challenge_ok``, ``challenge_edits``."""

    def to_dict(self, where: str, name: str, model_id: str) -> dict:
        """The ``verify --json`` line (and ``serve``'s verify answer) for input ``where``."""
        d, rec = self.decision, self.recording
        return {"event": "verify", "input": where, "name": name, "accepted": self.accepted,
                "voice_accepted": d.accepted, "score": round(d.score, 4),
                "threshold": round(d.threshold, 4), "margin": round(d.margin, 4),
                "speech_s": round(rec.speech_s, 2), "n_windows": rec.n_windows,
                "clipped": rec.clipped,
                "snr_db": None if rec.snr_db is None else round(rec.snr_db, 1),
                "fall_db": None if rec.fall_db is None else round(rec.fall_db, 2),
                "band": rec.band, "reason": self.reason, **self.challenge,
                "model_id": model_id}


def verify(session: EncoderSession, voiceprint: Voiceprint, source: FrameSource, where: str, *,
           live: bool, threshold: float | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
           challenge: str | None = None, recogniser=None,
           margin: float | None = None) -> VerifyResult:
    """Capture ``source`` and decide. Raises :class:`NotEnoughSpeech` when it held too little
    speech to decide. With ``challenge`` (digits) and ``recogniser`` (a
    :class:`~rtverify.apps.liveness.DigitRecognizer`), the digits must be said too."""
    from .liveness import MAX_ANSWER_S

    recorder = RecordingSource(source, MAX_ANSWER_S) if challenge is not None else None
    expert = session.short_expert
    # the audio is kept for the short expert and for the several-voices check
    kept = recorder or RecordingSource(source, LIVE_RECORD_S, refuse=False)
    rec = capture_speech(session, kept, live=live, timeout_s=timeout_s)
    need_s = session.info.decision.min_speech_s
    if rec.vector is None or rec.speech_s < need_s:
        raise NotEnoughSpeech(f"{where}: {rec.speech_s:.1f} s of speech, at least "
                              f"{need_s:.1f} s are needed to decide")
    if session.expert_decides(rec.speech_s, rec.snr_db) and not kept.full:
        # as listen decides a short utterance: the short expert, with its vector of the voice
        seen = voiceprint.for_model(expert[0].model_id)
        short = embed_recording(expert[0], [Chunk(kept.samples, 0.0)]) if seen else None
        if short is not None and short.vector is not None:
            session, voiceprint, rec = expert[0], seen, short
    policy = DecisionPolicy(session.info.decision, threshold, margin)
    voice = {voiceprint.name: voiceprint.vector()}
    prints, missing = voiceprints_for_band(voice, rec.band)  # as listen scores narrowband input
    if missing:
        warn_no_narrowband(voiceprint.name)
    # the model's own scoring, as listen and eval score (the default's cohort shift)
    scores = Scorer.for_model(session).scores(rec.vector, prints)
    d = policy.decide(scores, rec.speech_s, rec.snr_db, policy.offsets_for(voice),
                      fall_db=rec.fall_db, enrol_falls=policy.falls_for(voice))
    voices = several_voices_in(session, kept) if d.accepted else None
    extra = {} if voices is None else {"several_voices": voices}
    if recorder is None:
        return VerifyResult(rec, d, d.accepted and voices is None,
                            d.reason if voices is None else "several_voices", extra)
    from .liveness import check_answer

    heard = recogniser.recognise(recorder.samples, len(challenge))
    answered, edits = check_answer(heard, challenge)
    reason = ("several_voices" if voices is not None else
              "wrong_challenge" if d.accepted and not answered else d.reason)
    return VerifyResult(rec, d, d.accepted and answered and voices is None, reason,
                        {"challenge": challenge, "heard": heard, "challenge_ok": answered,
                         "challenge_edits": edits, **extra})


def several_voices_in(session: EncoderSession, kept: RecordingSource) -> str | None:
    """Whether what ``verify`` heard holds more than one voice, in words (None: one voice, or
    too long to check: more than :data:`LIVE_RECORD_S`). The recording's utterances as
    ``listen`` cuts them, judged as ``enroll --input`` judges a recording
    (:func:`~rtverify.apps.enroll.recording_voices`, at the model's bar for voices,
    ``enrolment.voices_bar``):
    a recording where the voice speaks a sentence and strangers the rest pooled into one
    embedding that the voice's threshold accepted (stop 27: three LibriSpeech speakers' whole
    utterances, the voice a third of the speech, scored 0.879 against 0.829)."""
    from .enroll import EnrollSettings, recording_voices

    if kept.full:
        return None
    return recording_voices(session, [Chunk(kept.samples, 0.0)],
                            EnrollSettings().for_model(session).voices_bar)
