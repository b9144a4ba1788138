"""The streaming verifier: chunks of audio in, events out.

    source -> 30 ms frames -> Segmenter -> StreamingFeatures -> SegmentEmbedder -> scores -> events

Nothing here prints. The live console, the JSON-lines writer, ``verify``, ``enroll``, ``eval`` and
the tests are all consumers of the same events, so what they see is what ``listen`` does.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np

from ..config import SAMPLE_RATE_HZ, SegmenterConfig
from .encoder import EncoderSession, SegmentEmbedder, SegmentEmbedding
from .features import StreamingFeatures
from .scoring import Decision, DecisionPolicy, Scorer
from .segmenter import Segmenter, SegmentAudio, SegmentEnd, SegmentStart
from ..io.sources import Chunk


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass(frozen=True)
class Event:
    """Base of everything the pipeline emits; ``to_dict`` gives the JSON-lines form."""

    def to_dict(self) -> dict:
        d = {"event": self.kind}
        d.update(asdict(self))
        return d

    kind = "event"


@dataclass(frozen=True)
class Status(Event):
    """Periodic state for meters (every ``status_every_s`` of stream time)."""

    kind = "status"
    t_s: float
    level_dbfs: float
    noise_floor_dbfs: float
    in_speech: bool
    overflows: int


@dataclass(frozen=True)
class SpeechStarted(Event):
    kind = "speech_start"
    start_s: float


@dataclass(frozen=True)
class Provisional(Event):
    """A running score while the speaker is still talking."""

    kind = "provisional"
    start_s: float
    t_s: float
    speech_s: float
    speaker: str | None
    score: float | None
    scores: dict[str, float]


@dataclass(frozen=True)
class SegmentDropped(Event):
    """Speech-like sound too short to be an utterance (a cough, a door)."""

    kind = "dropped"
    start_s: float
    end_s: float
    speech_s: float


@dataclass(frozen=True)
class DecisionEvent(Event):
    """The verdict on one utterance."""

    kind = "decision"
    start_s: float
    end_s: float
    speech_s: float
    speaker: str | None
    """Accepted voice or None."""
    best: str | None
    """Best-scoring voice, accepted or not."""
    score: float | None
    accepted: bool
    scores: dict[str, float]
    threshold: float
    margin: float | None
    reason: str
    """``accepted``, ``below_threshold``, ``too_short`` or ``no_voices``."""
    end_reason: str
    """Why the segment ended: ``pause``, ``max_length``, ``end_of_stream``, ``gap``."""
    clipped: bool
    level_dbfs: float
    n_windows: int
    decision_ms: float
    """Compute time from the segment's end event to this decision (milliseconds)."""
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The utterance embedding (not serialised)."""
    window_sum: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"event": "decision", "start_s": _r(self.start_s), "end_s": _r(self.end_s),
                "speech_s": _r(self.speech_s, 2), "speaker": self.speaker, "best": self.best,
                "score": _r(self.score, 4), "accepted": self.accepted,
                "scores": {k: _r(v, 4) for k, v in self.scores.items()},
                "threshold": _r(self.threshold, 4), "margin": _r(self.margin, 4),
                "reason": self.reason, "end_reason": self.end_reason, "clipped": self.clipped,
                "level_dbfs": _r(self.level_dbfs, 1), "n_windows": self.n_windows,
                "decision_ms": _r(self.decision_ms, 2)}


class Verifier:
    """Frames in, events out.

    :param session: the encoder.
    :param voiceprints: name -> unit embedding of the voices to score against (may be empty:
        decisions then say ``no_voices`` but still carry embeddings, which enrolment uses).
    :param segmenter: VAD and segmentation settings.
    :param threshold: overrides the model's calibrated threshold.
    :param max_pending: windows embedded together (1 = each as soon as it is complete).
    :param status_every_s: stream time between :class:`Status` events (0 disables them).
    :param workers: threads that embed and decide finished utterances while the main thread
        segments the audio that follows (0: everything on the calling thread). For input
        processed faster than real time on two or more cores: :meth:`process` still yields every
        event in stream order, and the events are the same (``decision_ms`` is then the worker's
        compute time for the decision, not counting its wait in the queue).
    """

    MAX_IN_FLIGHT = 16
    """Utterances waiting for the worker before :meth:`process` waits for the oldest."""

    def __init__(self, session: EncoderSession, voiceprints: Mapping[str, np.ndarray] | None = None,
                 *, segmenter: SegmenterConfig = SegmenterConfig(), threshold: float | None = None,
                 max_pending: int = 1, provisional: bool = True,
                 status_every_s: float = 0.0, workers: int = 0) -> None:
        self.session = session
        self.voiceprints = dict(voiceprints or {})
        self.policy = DecisionPolicy(session.info.decision, threshold)
        # the model's own scoring, as in ``eval`` (made when there is something to score, so that
        # embedding a recording does not load a score-normalisation cohort)
        self.scorer: Scorer | None = Scorer.for_model(session) if self.voiceprints else None
        self.segmenter = Segmenter(segmenter)
        self.features = session.streaming_features()  # mel rows, or Kaldi fbank for CAM++
        self.max_pending = max_pending
        self.embedder = SegmentEmbedder(session, max_pending=max_pending)
        self._worker = ThreadPoolExecutor(workers, thread_name_prefix="rtverify-decide") \
            if workers > 0 else None
        self._out: deque = deque()  # process(): events (or futures of decisions) not yet yielded
        self.provisional = provisional
        self.status_every_s = status_every_s
        self.overflows = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream (an open segment is discarded)."""
        self.segmenter.reset()
        self.features.reset()
        self.embedder.reset()
        self._frame_len = self.segmenter.frame_samples
        self._pending = np.zeros(0, dtype=np.float32)
        self._unfed: list[np.ndarray] = []  # segment audio not yet turned into rows
        self._unfed_n = 0
        self._n0: int | None = None  # stream sample index of _pending[0]
        self._seg_start = 0.0
        self._next_status = 0.0
        self._level = -120.0

    # -- internals --------------------------------------------------------------------
    def _scores(self, embedding: np.ndarray) -> dict[str, float]:
        if not self.voiceprints:
            return {}
        if self.scorer is None:
            self.scorer = Scorer.for_model(self.session)
        return self.scorer.scores(embedding, self.voiceprints)

    def _take_unfed(self) -> np.ndarray:
        """The segment audio not yet turned into rows, as one array (and forget it)."""
        unfed = self._unfed
        self._unfed, self._unfed_n = [], 0
        return unfed[0] if len(unfed) == 1 else np.concatenate(unfed)

    def _feed(self, pieces: list[np.ndarray], events: list[Event], t_s: float) -> None:
        """Queue segment audio; turn it into rows once they complete the next window.

        Rows are only needed when a window can be embedded, so the spectrogram is computed then
        (a hop's worth of rows at once, not a chunk's) and at the segment's end: the same rows
        and the same windows at the same moments, for far fewer calls.
        """
        if pieces:
            self._unfed.extend(pieces)
            self._unfed_n += sum(len(p) for p in pieces)
            pieces.clear()
        if not self._unfed or self.features.ready_rows(self._unfed_n) < self.embedder.rows_needed:
            return
        rows = self.features.push(self._take_unfed())
        if self.embedder.push_rows(rows) and self.provisional:
            emb = self.embedder.current()
            scores = self._scores(emb)
            d = self.policy.decide(scores, self.embedder.n_rows / 100.0)
            events.append(Provisional(self._seg_start, t_s, self.embedder.n_rows / 100.0,
                                      d.speaker, d.score, scores))

    def _end(self, end: SegmentEnd, events: list) -> None:
        t = time.perf_counter()
        if self._unfed:
            self.embedder.push_rows(self.features.push(self._take_unfed()))
        self.embedder.push_rows(self.features.flush())
        if end.dropped:
            self.embedder.reset()
            events.append(SegmentDropped(end.start_s, end.end_s, end.speech_s))
            return
        if self._worker is None:
            decision = self._decide(self.embedder, end, t)
            if decision is not None:
                events.append(decision)
            return
        # a worker finishes this utterance's embedder; the next utterance gets a fresh one
        embedder = self.embedder
        self.embedder = SegmentEmbedder(self.session, max_pending=self.max_pending)
        events.append(self._worker.submit(self._decide, embedder, end, None))

    def _decide(self, embedder: SegmentEmbedder, end: SegmentEnd,
                t: float | None) -> DecisionEvent | None:
        t = time.perf_counter() if t is None else t
        seg: SegmentEmbedding | None = embedder.finish()
        if seg is None:
            return None
        d: Decision = self.policy.decide(self._scores(seg.vector), end.speech_s)
        return DecisionEvent(
            start_s=end.start_s, end_s=end.end_s, speech_s=end.speech_s, speaker=d.speaker,
            best=d.best, score=d.score, accepted=d.accepted, scores=d.scores,
            threshold=d.threshold, margin=d.margin, reason=d.reason, end_reason=end.reason,
            clipped=end.clipped, level_dbfs=end.level_dbfs, n_windows=seg.n_windows,
            decision_ms=(time.perf_counter() - t) * 1000.0, embedding=seg.vector,
            window_sum=seg.window_sum)

    def _handle(self, seg_events: list, events: list[Event], pieces: list[np.ndarray],
                t_s: float) -> None:
        for ev in seg_events:
            if isinstance(ev, SegmentAudio):
                pieces.append(ev.samples)
            elif isinstance(ev, SegmentStart):
                self._feed(pieces, events, t_s)
                self._unfed, self._unfed_n = [], 0
                self.features.reset()
                self.embedder.reset()
                self._seg_start = ev.start_s
                events.append(SpeechStarted(ev.start_s))
            elif isinstance(ev, SegmentEnd):
                self._feed(pieces, events, t_s)
                self._end(ev, events)

    # -- public -----------------------------------------------------------------------
    @staticmethod
    def _resolved(items) -> list[Event]:
        """Events, with the decisions of the worker waited for (in order)."""
        out = []
        for item in items:
            if isinstance(item, Future):
                item = item.result()
                if item is None:
                    continue
            out.append(item)
        return out

    def push(self, chunk: Chunk) -> list[Event]:
        """Process a chunk of any length; return the events it completed."""
        return self._resolved(self._push(chunk))

    def _push(self, chunk: Chunk) -> list:
        events: list = []
        start = int(round(chunk.start_s * SAMPLE_RATE_HZ))
        if self._n0 is None:
            self._n0 = start
        if abs(start - (self._n0 + len(self._pending))) > SAMPLE_RATE_HZ // 20:
            events.extend(self._close_stream("gap"))  # a hole in the stream (device reopened)
            self._n0 = start
        buf = np.concatenate([self._pending, chunk.samples]) if len(self._pending) else chunk.samples
        n = len(buf) // self._frame_len
        pieces: list[np.ndarray] = []
        t = self._n0 / SAMPLE_RATE_HZ
        if n:
            starts = [(self._n0 + i * self._frame_len) / SAMPLE_RATE_HZ for i in range(n)]
            frames = buf[:n * self._frame_len].reshape(n, self._frame_len)
            for i, seg_events in enumerate(self.segmenter.push_frames(frames, starts)):
                t = starts[i]
                if seg_events:
                    self._handle(seg_events, events, pieces, t)
                if self.status_every_s and t >= self._next_status:
                    self._next_status = t + self.status_every_s
                    frame = frames[i]
                    power = float(np.dot(frame, frame)) / len(frame)
                    events.append(Status(round(t, 3), 10 * np.log10(power + 1e-12),
                                         self.segmenter.noise_floor_dbfs, self.segmenter.in_speech,
                                         self.overflows))
        self._feed(pieces, events, t)
        self._pending = buf[n * self._frame_len:].copy()
        self._n0 += n * self._frame_len
        return events

    def _close_stream(self, reason: str) -> list[Event]:
        events: list[Event] = []
        pieces: list[np.ndarray] = []
        for ev in self.segmenter.flush():
            if isinstance(ev, SegmentEnd):
                ev = SegmentEnd(ev.start_s, ev.end_s, ev.speech_s, reason, ev.clipped,
                                ev.level_dbfs, ev.dropped)
            self._handle([ev], events, pieces, ev.end_s if isinstance(ev, SegmentEnd) else 0.0)
        self._pending = np.zeros(0, dtype=np.float32)
        self._unfed, self._unfed_n = [], 0
        self.features.reset()
        self.embedder.reset()
        return events

    def finish(self) -> list[Event]:
        """End of stream: decide on an open segment (after any events :meth:`process` had not
        yielded yet, e.g. when it was interrupted). The verifier is then reset."""
        pending = list(self._out)
        self._out.clear()
        events = self._resolved(pending + self._close_stream("end_of_stream"))
        self.reset()
        return events

    def _ready(self) -> Iterator[Event]:
        """Pop the events at the head of the queue whose decisions are done (waiting for the
        oldest when too many are in flight)."""
        out = self._out
        in_flight = sum(isinstance(i, Future) for i in out)
        while out:
            head = out[0]
            if isinstance(head, Future):
                if not (head.done() or in_flight > self.MAX_IN_FLIGHT):
                    return
                in_flight -= 1
                out.popleft()
                head = head.result()
                if head is None:
                    continue
            else:
                out.popleft()
            yield head

    def process(self, source: Iterable[Chunk]) -> Iterator[Event]:
        """All events of a whole source, in stream order, ending with :meth:`finish`."""
        for chunk in source:
            self.overflows = getattr(source, "overflows", 0)
            self._out.extend(self._push(chunk))
            yield from self._ready()
        yield from self.finish()  # waits for what is still queued, in order

    def close(self) -> None:
        """Stop the worker threads (if any)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)


@dataclass(frozen=True)
class RecordingEmbedding:
    """One embedding for a whole recording: every utterance in it, pooled window by window."""

    vector: np.ndarray | None
    """Unit embedding, float32 ``(dim,)``; None if the recording held no usable speech."""
    speech_s: float
    """Voiced seconds in the utterances that were pooled."""
    n_windows: int
    decisions: list[DecisionEvent]
    """The per-utterance events it was pooled from."""
    clipped: bool
    """Some pooled utterance was clipped."""


def embed_recording(session: EncoderSession, chunks: Iterable[Chunk], *,
                    segmenter: SegmenterConfig = SegmenterConfig(),
                    max_pending: int = 8) -> RecordingEmbedding:
    """Run a recording through the same path as live audio (VAD, features, windows) and pool
    all its utterances into one embedding (the normalised mean of all window embeddings)."""
    verifier = Verifier(session, {}, segmenter=segmenter, max_pending=max_pending,
                        provisional=False)
    decisions = [e for e in verifier.process(chunks) if isinstance(e, DecisionEvent)]
    total = np.zeros(session.dim, dtype=np.float64)
    for d in decisions:
        total += d.window_sum
    n_windows = sum(d.n_windows for d in decisions)
    vector = (total / np.linalg.norm(total)).astype(np.float32) if n_windows else None
    return RecordingEmbedding(vector, sum(d.speech_s for d in decisions), n_windows, decisions,
                              any(d.clipped for d in decisions))
