"""The streaming verifier: chunks of audio in, events out.

    source -> 30 ms frames -> Segmenter -> StreamingFeatures -> SegmentEmbedder -> scores -> events

Nothing here prints. The live console, the JSON-lines writer, ``verify``, ``enroll``, ``eval`` and
the tests are all consumers of the same events, so what they see is what ``listen`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from ..config import SAMPLE_RATE_HZ, SegmenterConfig
from ..events import (DecisionEvent, Event, Provisional, SegmentDropped, SpeechStarted, Status,
                      Summary, Tally)
from .encoder import EncoderSession, SegmentEmbedder, SegmentEmbedding, embed_segment
from .features import StreamingFeatures
from .scoring import (FALL_MIN_SPEECH_S, Decision, DecisionPolicy, Scorer, effective_band,
                      fall_db, gallery_scores, top_scores, voiceprints_for_band,
                      warn_no_narrowband)
from .segmenter import Segmenter, SegmentAudio, SegmentEnd, SegmentStart
from .turns import Turn, TurnConfig, TurnEmbedder
from ..io.sources import Chunk, FrameSource, as_source



def _listed(decision: DecisionEvent | list[DecisionEvent] | None) -> list[DecisionEvent]:
    """What :meth:`Verifier._decide` returns (one decision, the parts of a split segment, or
    none) as a list."""
    return decision if isinstance(decision, list) else [] if decision is None else [decision]


class _Held(NamedTuple):
    """Rows held back at a ``max_length`` cut for the next segment (see ``Verifier.HOLD_S``)."""

    rows: np.ndarray
    start_s: float
    """Stream time where they begin (the cut segment's decision ends there)."""
    speech_s: float
    """Their share of the cut segment's speech (seconds)."""
    cut_end: SegmentEnd
    deadline_s: float | None
    """After a cut in a short pause: a segment opening later does not take them (None: the
    next segment opens with the next frame)."""


class Verifier:
    """Frames in, events out.

    :param session: the encoder.
    :param voiceprints: name -> unit embedding of the voices to score against (may be empty:
        decisions then say ``no_voices`` but still carry embeddings, which enrolment uses).
        Under a model with a ``short_expert`` (the default), an utterance with less speech than
        the expert's bar (and, where the sidecar says, a clean enough SNR) is decided by the
        expert, against each voice's vector for it
        (:attr:`~rtverify.core.scoring.VoiceVector.companions`).
    :param segmenter: VAD and segmentation settings.
    :param threshold: overrides the model's calibrated threshold.
    :param margin: added to every threshold the model calibrated (``--margin``).
    :param max_pending: windows embedded together (1 = each as soon as it is complete).
    :param status_every_s: stream time between :class:`Status` events (0 disables them).
    :param workers: threads that embed and decide finished utterances while the main thread
        segments the audio that follows (0: everything on the calling thread). For input
        processed faster than real time on two or more cores: :meth:`process` still yields every
        event in stream order, and the events are the same (``decision_ms`` is then the worker's
        compute time for the decision, not counting its wait in the queue).
    :param bands: tell each decision's ``band`` even with no voiceprints to score (``verify``
        pools a recording's decisions and then scores them); with voiceprints it always is.
    """

    MAX_IN_FLIGHT = 16
    """Utterances waiting for the worker before :meth:`process` waits for the oldest."""

    def __init__(self, session: EncoderSession, voiceprints: Mapping[str, np.ndarray] | None = None,
                 *, segmenter: SegmenterConfig = SegmenterConfig(), threshold: float | None = None,
                 margin: float | None = None, max_pending: int = 1, provisional: bool = True,
                 status_every_s: float = 0.0, workers: int = 0, bands: bool = False) -> None:
        self.session = session
        self.voiceprints = dict(voiceprints or {})
        self._galleries: dict[str, tuple] = {}
        self.policy = DecisionPolicy(session.info.decision, threshold, margin)
        self._offsets = self.policy.offsets_for(self.voiceprints)  # by enrolled speech
        self._falls = self.policy.falls_for(self.voiceprints)  # the enrolments' rooms
        # how steeply each utterance's speech falls: where the model judges rooms by it, and for
        # recordings and enrolment (voiceprints keep it); not for a model without room offsets
        # listening for voices (2 % of the default's listening time)
        self._want_fall = bool(bands or not self.voiceprints or
                               session.info.decision.threshold_offsets_by_fall_change_db)
        # the model's own scoring, as in ``eval`` (made when there is something to score, so that
        # embedding a recording does not load a score-normalisation cohort)
        self.scorer: Scorer | None = Scorer.for_model(session) if self.voiceprints else None
        self.segmenter = Segmenter(session.info.segmenter_config(segmenter))
        self.features = session.streaming_features()  # mel rows, or Kaldi fbank for CAM++
        self.max_pending = max_pending
        self._turn_cfg = TurnConfig.for_model(session.info.raw)  # the model's own cosines
        self.embedder = TurnEmbedder(session, max_pending=max_pending,
                                     cfg=self._turn_cfg)  # issue 12: turns
        self._worker = ThreadPoolExecutor(workers, thread_name_prefix="rtverify-decide") \
            if workers > 0 else None
        self._out: deque = deque()  # process(): events (or futures of decisions) not yet yielded
        self.provisional = provisional
        self.bands = bands
        self.status_every_s = status_every_s
        self.overflows = 0
        """Blocks of input the source lost (count), as the source last reported it."""
        self.tally = Tally()
        """Counts of the events this verifier has handed out (what :meth:`summary` reports)."""
        self._band_warned: set[str] = set()
        self._short = self._short_expert(segmenter, threshold, margin)
        self.reset()

    def _short_expert(self, segmenter: SegmenterConfig, threshold: float | None,
                      margin: float | None = None) -> "Verifier | None":
        """The scorer of short utterances when the model names a ``short_expert`` (a Verifier
        of that model over the voices' vectors for it, used for its scores and thresholds
        only; which utterances it decides: :meth:`EncoderSession.expert_decides`); None
        otherwise, or when some voice holds no vector for it (enrolled with that model alone:
        every utterance is then decided by this model)."""
        expert = self.session.short_expert if self.voiceprints else None
        if expert is None:
            return None
        sub, below = expert
        voices = {n: getattr(v, "companions", {}).get(sub.model_id)
                  for n, v in self.voiceprints.items()}
        missing = sorted(n for n, v in voices.items() if v is None)
        if missing:
            logging.getLogger(__name__).warning(
                "%s hold%s no embedding for %s (the model for utterances under %.1f s of "
                "speech): short utterances are scored by %s; re-enroll to score them better",
                ", ".join(map(repr, missing[:3])) + (" ..." if len(missing) > 3 else ""),
                "s" if len(missing) == 1 else "", sub.model_id, below, self.session.model_id)
            return None
        return Verifier(sub, voices, segmenter=segmenter, threshold=threshold, margin=margin,
                        provisional=False)

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
        self._hold: _Held | None = None  # rows held back at a max_length cut, for the next one
        self._carried: tuple[float, float] | None = None  # (start_s, speech_s) the open one carries
        self._next_status = 0.0
        self._level = -120.0

    # -- internals --------------------------------------------------------------------
    def _scores(self, embedding: np.ndarray, band: str = "wide") -> dict[str, float]:
        if not self.voiceprints:
            return {}
        if self.scorer is None:
            self.scorer = Scorer.for_model(self.session)
        voiceprints = self.voiceprints
        if band != "wide":  # issue 12: the voiceprints' embeddings for the input's band
            voiceprints, missing = voiceprints_for_band(voiceprints, band)
            for name in missing:
                if name not in self._band_warned:
                    self._band_warned.add(name)
                    warn_no_narrowband(name)
        if len(voiceprints) < self.MATRIX_MIN_VOICES:
            return self.scorer.scores(embedding, voiceprints)
        names, matrix, stats = self._gallery(band, voiceprints)
        return top_scores(self.scorer.matrix_scores(embedding, matrix, stats), names,
                          self.TOP_SCORES)

    MATRIX_MIN_VOICES = 256
    """From this many voices on, scores come from one matrix product over a unit ``(n, dim)``
    matrix built once per band, and decisions carry only the TOP_SCORES best (count)."""
    TOP_SCORES = 10
    """Scores a decision carries when the voices are scored as a matrix (count)."""

    def _gallery(self, band: str, voiceprints: Mapping[str, np.ndarray]
                 ) -> tuple[list[str], np.ndarray, tuple | None]:
        """Names, matrix and cohort statistics of ``voiceprints`` (cached per band: the
        voices of a Verifier do not change)."""
        cached = self._galleries.get(band)
        if cached is None:
            names = list(voiceprints)
            matrix = np.stack([np.asarray(voiceprints[n], np.float32) for n in names])
            stats = self.scorer.cohort_stats(matrix) if self.scorer.per_voice_stats else None
            cached = self._galleries[band] = (names, matrix, stats)
        return cached

    SPLIT_NEAR = 0.04
    SPLIT_FAR = 0.02
    """A suspected change of speaker is placed only where it can change a decision: some window
    of the segment scores at least the threshold minus SPLIT_NEAR for a voice and another one
    below the threshold minus SPLIT_FAR for the same voice (cosine; under ``probe_shift``
    scoring the windows' raw cosines, which that shift keeps on the thresholds' scale); or
    always when nothing is enrolled (enrolment checks its takes) or scores are AS-normalised.
    (SPLIT_NEAR was 0.02 until stop 22: a 1.6 s window of the room-trained default scores lower
    than the pooled turn it belongs to, and the gate skipped true changes whose split it had
    found; on six draws of issue 12's 40 turn streams 0.04 got 8 more of 1440 turns right than
    0.02, 0.06 none more. SPLIT_FAR was 0.05 until stop 27: a stranger's 1.6 s window 0.03
    under the threshold did not count as clearly below it, and the stranger's 1.8 s rode on the
    target's accepted turn; on the held-out turn streams, three draws, 0.02 got 4 more of 702
    turns right, on three new speaker draws of 40 streams 1 more of 720, none fewer anywhere;
    changes placed inside someone's turn 27 -> 31 and 38 -> 40: ``python -m
    tools.room_streams``, README "Real rooms".)"""

    def _split_sims(self, windows: np.ndarray, snr_db: float | None = None
                    ) -> tuple[bool, np.ndarray | None]:
        """Whether a voice could be accepted in part of a segment but not in another, and, when
        the voices are scored as a matrix (a large gallery), the pooled segment's raw scores
        against every voice: the segment's own scores when it is not split, so one pass over
        the gallery serves both.

        A large gallery is not multiplied by every window (that is a pass per window's worth of
        arithmetic: 18 ms at 100 000 voices). The pooled direction ``c`` is scored against all
        voices, and a window ``w`` can score at least ``s`` against a voice ``v`` only if
        ``angle(c, v) <= angle(c, w) + arccos(s)`` (the triangle inequality of angles), so only
        the voices that pass that bound are scored window by window: the same answer, exactly.
        """
        if not self.voiceprints or (self.scorer is not None and self.scorer.per_voice_stats):
            return True, None
        if self.scorer is None:
            self.scorer = Scorer.for_model(self.session)
        t = self.policy.threshold_for(1.6, snr_db) - self.policy.margin  # turns: as calibrated
        matrix = self._gallery("wide", self.voiceprints)[1]
        if len(self.voiceprints) < self.MATRIX_MIN_VOICES:
            return self._worth(windows @ matrix.T, t), None
        total = windows.sum(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(total))
        if norm == 0.0:
            return True, None
        pooled = matrix @ (total / norm).astype(np.float32)
        unit = windows / np.maximum(np.linalg.norm(windows, axis=1, keepdims=True), 1e-12)
        theta = float(np.arccos(np.clip(unit @ (total / norm), -1.0, 1.0)).max())
        reach = theta + float(np.arccos(np.clip(t - self.SPLIT_NEAR, -1.0, 1.0)))
        cut = np.cos(min(np.pi, reach)) - 1e-4  # float32 rounding of the pooled scores
        near = np.flatnonzero(pooled >= cut)
        worth = bool(len(near)) and self._worth(windows @ matrix[near].T, t)
        return worth, pooled

    EDGE_S = 1.0
    """Speech in an edge that the edge checks judge (seconds: ``edge_rows`` of 100)."""

    def _near_accept(self, vector: np.ndarray, speech_s: float, snr_db: float | None
                     ) -> tuple[bool, dict[str, float]]:
        """Whether some voice would accept ``vector`` (``speech_s`` voiced seconds), or nearly:
        its margin over its own threshold at least -SPLIT_NEAR; and the scores. The edge checks
        (issue 12) ask it twice: of the whole segment, whether to look at its edges at all
        (another voice's second rides only on an accepted decision; never without voices:
        enrolment), and of an edge that sounds unlike the rest, whether splitting it off can
        change a decision (one that would be accepted alone changes none, and splitting it
        would only cut a true speaker's turn in two: the edge bars' false alarms, 5 %, are
        mostly the target's own last or first second)."""
        scores = self._scores(np.asarray(vector, np.float32))
        if not scores:
            return False, scores
        d = self.policy.decide(scores, speech_s, snr_db, self._offsets)
        # as calibrated: --margin moves decisions, not where an utterance is cut
        return d.margin + self.policy.margin >= -self.SPLIT_NEAR, scores

    def _worth(self, sims: np.ndarray, t: float) -> bool:
        """Some voice (column) scores near the threshold ``t`` in one window (row) and clearly
        below it in another."""
        return bool(((sims.max(axis=0) >= t - self.SPLIT_NEAR) &
                     (sims.min(axis=0) < t - self.SPLIT_FAR)).any())

    def _scores_from_sims(self, turn, windows: np.ndarray, pooled: np.ndarray
                          ) -> dict[str, float] | None:
        """A whole segment's scores from the pooled scores of :meth:`_split_sims`. None when
        the segment was not pooled from exactly those windows."""
        total = windows.sum(axis=0, dtype=np.float64)
        norm = float(np.linalg.norm(total))
        if norm == 0.0 or turn.window_sum is None or \
                not np.allclose(turn.window_sum, total, atol=1e-4) or \
                not np.allclose(turn.vector, total / norm, atol=1e-5):
            return None
        names = self._gallery("wide", self.voiceprints)[0]
        return top_scores(self.scorer.shift_cosines(pooled, turn.vector), names,
                          self.TOP_SCORES)

    def _turn_scores(self, vectors: list[np.ndarray]) -> list[dict[str, float]] | None:
        """Wideband scores of several turns' vectors in one pass over a large gallery (None for
        a small one, or with AS-norm: those are scored one by one)."""
        if len(self.voiceprints) < self.MATRIX_MIN_VOICES or self.scorer is None or \
                self.scorer.per_voice_stats:
            return None
        names, matrix, _ = self._gallery("wide", self.voiceprints)
        stack = np.stack(vectors)
        return [top_scores(row, names, self.TOP_SCORES)
                for row in self.scorer.shift_cosines(gallery_scores(matrix, stack), stack)]

    def _take_unfed(self) -> np.ndarray:
        """The segment audio not yet turned into rows, as one array (and forget it)."""
        unfed = self._unfed
        self._unfed, self._unfed_n = [], 0
        return unfed[0] if len(unfed) == 1 else np.concatenate(unfed)

    def _feed(self, pieces: list[np.ndarray], events: list[Event], t_s: float,
              speech_s: float | None = None, snr_db: float | None = None) -> None:
        """Queue segment audio; turn it into rows once they complete the next window.

        Rows are only needed when a window can be embedded, so the spectrogram is computed then
        (a hop's worth of rows at once, not a chunk's) and at the segment's end: the same rows
        and the same windows at the same moments, for far fewer calls.

        A provisional score is judged, like the decision, by the voiced seconds of the segment
        so far (``speech_s``, else the segmenter's count), not by the rows embedded: those hold
        pre-roll and pauses too; and by the SNR estimated so far (``snr_db`` at the segment's
        end, else the segmenter's running estimate).
        """
        if pieces:
            self._unfed.extend(pieces)
            self._unfed_n += sum(len(p) for p in pieces)
            pieces.clear()
        if not self._unfed or self.features.ready_rows(self._unfed_n) < self.embedder.rows_needed:
            return
        rows = self.features.push(self._take_unfed())
        if self.embedder.push_rows(rows) and self.provisional:
            emb = self.embedder.current()  # the windows since a suspected change of speaker
            scores = self._scores(emb)
            voiced_s = self.segmenter.speech_s if speech_s is None else speech_s
            if self._carried is not None:  # the half second held back at a max_length cut
                voiced_s += self._carried[1]
            snr = self.segmenter.snr_db if speech_s is None else snr_db
            turn_row = self.embedder.turn_start_row  # > 0: restarted at a suspected change
            if turn_row:
                voiced_s *= (self.embedder.n_rows - turn_row) / max(self.embedder.n_rows, 1)
            d = self.policy.decide(scores, voiced_s, snr, self._offsets)
            events.append(Provisional(self._seg_start, t_s, voiced_s, d.speaker, d.score,
                                      scores, self._seg_start + turn_row / 100.0
                                      if turn_row else None))

    HOLD_S = 0.5
    """At a ``max_length`` cut, the last this-many seconds of the segment are not decided with
    it but carried into the next segment (which opens with the next frame after a cut in the
    middle of speech; after a cut in a short pause, the next segment takes them if it opens
    within ``pause_ms`` of the cut, else they are decided alone then): another speaker
    who began just before the cut would otherwise ride on the first one's accepted decision,
    too short for the edge checks to hear (issue 12's back-to-back turns); carried over, that
    half second is judged with the speech that follows it. Changes of
    speaker are still looked for over the whole segment; the decision still comes at the cut
    and covers the segment up to half a second before it. Only when voices are listened for (a
    pooled recording, enrolment, ``eval``: nothing changes). Six draws of the 40 turn streams
    (``tools.room_streams --kinds turns --seed 1..6``): turns right 1418 of 1440 without, 1420
    with 0.4 or 0.5 s, 1419 with 0.6, 1411 with 0.8, 1410 with 1.0 (a longer hold moves more of
    a true speaker's turn into the next decision, which then has less speech to be accepted
    on, or carries them into the next speaker's first words); holding at cuts in a short pause
    too: 1422, and 238 of 240 on the 40 streams against 237."""

    def _hold_back(self, end: SegmentEnd) -> tuple[int, SegmentEnd] | None:
        """At a ``max_length`` cut: keep the segment's last :attr:`HOLD_S` of rows for the next
        segment (``self._hold``) and return how many rows that is, with the segment's end moved
        to where they begin (its speech as it was: :meth:`_decide` shares it out by rows); None
        otherwise (a pause ended it, too few rows, nothing enrolled)."""
        hold = int(round(self.HOLD_S * 100))  # 10 ms rows
        if not (end.reason == "max_length" and self.voiceprints and hold):
            return None
        rows = self.embedder.rows()
        n = len(rows)
        if n < 3 * hold:
            return None
        cut_s = end.start_s + (n - hold) / 100.0
        held_speech = end.speech_s * hold / n
        # cut in a short pause: the next segment takes them if it opens before the pause would
        # have ended the segment anyway; otherwise they are decided alone then
        deadline = None if end.continues else end.end_s + self.segmenter.cfg.pause_ms / 1000.0
        self._hold = _Held(rows[n - hold:], cut_s, held_speech, end, deadline)
        return hold, dataclasses.replace(end, end_s=cut_s)

    def _release_hold(self, reason: str) -> list[DecisionEvent]:
        """Decide the held-back rows alone (nothing took them: the stream stopped, or nobody
        spoke on after a cut in a short pause): the events."""
        held, self._hold = self._hold, None
        end = dataclasses.replace(held.cut_end, start_s=held.start_s, speech_s=held.speech_s,
                                  reason=reason, continues=False)
        embedder = TurnEmbedder(self.session, max_pending=max(self.max_pending, 8),
                                cfg=self._turn_cfg)
        embedder.push_rows(held.rows)
        return _listed(self._decide(embedder, end, None))

    def _with_carried(self, end: SegmentEnd) -> SegmentEnd:
        """``end`` of a segment that carries held-back rows: from their start and with their
        speech; never dropped (they were speech worth deciding)."""
        carried, self._carried = self._carried, None
        if carried is None:
            return end
        start_s, speech_s = carried
        return dataclasses.replace(end, start_s=start_s, speech_s=end.speech_s + speech_s,
                                   dropped=False, drop_reason=None)

    def _end(self, end: SegmentEnd, events: list) -> None:
        t = time.perf_counter()
        if self._unfed:
            self.embedder.push_rows(self.features.push(self._take_unfed()))
        self.embedder.push_rows(self.features.flush())
        end = self._with_carried(end)
        if end.dropped:
            self.embedder.reset()
            events.append(SegmentDropped(end.start_s, end.end_s, end.speech_s,
                                         end.drop_reason or "too_short"))
            return
        hold_rows, end = self._hold_back(end) or (0, end)
        if self._worker is None:
            events.extend(_listed(self._decide(self.embedder, end, t, hold_rows)))
            return
        # a worker finishes this utterance's embedder; the next utterance gets a fresh one
        embedder = self.embedder
        self.embedder = TurnEmbedder(self.session, max_pending=self.max_pending,
                                     cfg=self._turn_cfg)
        events.append(self._worker.submit(self._decide, embedder, end, None, hold_rows))

    def _decide(self, embedder: TurnEmbedder, end: SegmentEnd, t: float | None,
                hold_rows: int = 0) -> DecisionEvent | list[DecisionEvent] | None:
        """The decision(s) on one segment. ``hold_rows``: its last rows were held back for the
        next segment (:attr:`HOLD_S`; ``end.end_s`` is then where they begin): changes of
        speaker are still looked for over every row, but the decisions stop before those."""
        t = time.perf_counter() if t is None else t
        if self._short is not None and self.session.expert_decides(end.speech_s, end.snr_db):
            return self._decide_short(embedder, end, t)
        memo: dict = {}

        def worth(windows: np.ndarray) -> bool:
            ok, memo["sims"] = self._split_sims(windows, end.snr_db)
            memo["windows"] = windows
            return ok

        def edge_worth(vector: np.ndarray) -> bool:
            near, memo["segment_scores"] = self._near_accept(vector, end.speech_s, end.snr_db)
            return near

        def edge_matters(vector: np.ndarray) -> bool:
            return not self._near_accept(vector, self.EDGE_S, end.snr_db)[0]

        found = embedder.finish_turns(worth, edge_worth, edge_matters)
        if found is None:
            return None
        turns, n_rows = found
        truncated = None
        if hold_rows:
            keep = n_rows - hold_rows
            turns = [tn for tn in turns if tn.start_row < keep]
            last_turn = turns[-1]
            if last_turn.end_row > keep:  # the last turn without the held rows: the segment's
                # own windows wholly before them
                seg = embedder.prefix_embedding(keep) if last_turn.start_row == 0 else None
                if seg is None:  # (a turn after a change: its windows are not the segment's)
                    seg = embed_segment(self.session,
                                        embedder.last_rows[last_turn.start_row:keep])
                truncated = turns[-1] = Turn(last_turn.start_row, keep, seg.vector,
                                             seg.window_sum, seg.n_windows)
        out = []
        bands = [effective_band(embedder.last_rows[turn.start_row:turn.end_row],
                                self.session.features)
                 if self.voiceprints or self.bands else "wide"
                 for turn in turns]
        batched = self._turn_scores([turn.vector for turn in turns]) \
            if len(turns) > 1 and "wide" in bands else None
        for i, turn in enumerate(turns):  # one, unless the speaker changed (issue 12)
            last = i == len(turns) - 1
            start_s = end.start_s if i == 0 else end.start_s + turn.start_row / 100.0
            end_s = end.end_s if last else end.start_s + turn.end_row / 100.0
            speech_s = end.speech_s * (turn.end_row - turn.start_row) / max(n_rows, 1)
            band = bands[i]
            scores = None
            whole = turn is not truncated  # the memos are of the whole segment's windows
            if len(turns) == 1 and band == "wide" and memo.get("sims") is not None and whole:
                scores = self._scores_from_sims(turn, memo["windows"], memo["sims"])
            elif batched is not None and band == "wide":
                scores = batched[i]
            if scores is None and len(turns) == 1 and band == "wide" and whole:
                scores = memo.get("segment_scores")  # the edge check scored it already
            rows = embedder.last_rows[turn.start_row:turn.end_row]
            fall = self._fall(rows, speech_s)
            if self._short is not None and self.session.expert_decides(speech_s, end.snr_db):
                # a turn split off with under the expert's bar of speech: the expert decides it
                d, _ = self._short._decide_rows(rows, speech_s, end.snr_db, band, fall)
            else:
                if scores is None:
                    scores = self._scores(turn.vector, band)
                d = self.policy.decide(scores, speech_s, end.snr_db, self._offsets,
                                       fall_db=fall, enrol_falls=self._falls)
            out.append(_event(d, end, t, start_s=start_s, end_s=end_s, speech_s=speech_s,
                              end_reason=end.reason if last else "speaker_change",
                              n_windows=turn.n_windows, embedding=turn.vector,
                              window_sum=turn.window_sum, band=band, fall_db=fall))
        return out[0] if len(out) == 1 else out

    def _decide_short(self, embedder: TurnEmbedder, end: SegmentEnd, t: float
                      ) -> DecisionEvent | None:
        """An utterance with less speech than the short expert's bar: the expert embeds its rows
        and decides it (the model's own embedding of it would go unused, so it is not made; a
        change of speaker inside under a second of speech is not looked for). The event carries
        no embedding: only verifiers without voices (enrolment, pooling) use those."""
        rows = embedder.rows()
        embedder.reset()
        if not len(rows):
            return None
        band = effective_band(rows, self.session.features)
        fall = self._fall(rows, end.speech_s)
        d, seg = self._short._decide_rows(rows, end.speech_s, end.snr_db, band, fall)
        if seg is None:
            return None
        return _event(d, end, t, start_s=end.start_s, end_s=end.end_s, speech_s=end.speech_s,
                      end_reason=end.reason, n_windows=seg.n_windows, embedding=None,
                      window_sum=None, band=band, fall_db=fall)

    def _decide_rows(self, rows: np.ndarray, speech_s: float, snr_db: float | None, band: str,
                     fall: float | None) -> tuple[Decision, SegmentEmbedding | None]:
        """This model's decision on one utterance's rows (embedded as a segment of its own)
        against its voices, and the embedding (None without rows)."""
        seg = embed_segment(self.session, rows)
        scores = self._scores(seg.vector, band) if seg is not None else {}
        return self.policy.decide(scores, speech_s, snr_db, self._offsets, fall_db=fall,
                                  enrol_falls=self._falls), seg

    def _fall(self, rows: np.ndarray, speech_s: float) -> float | None:
        """How steeply an utterance's speech falls silent, where it is measured."""
        return fall_db(rows, self.session.features) \
            if self._want_fall and speech_s >= FALL_MIN_SPEECH_S else None

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
                if self._hold is not None and self._hold.deadline_s is not None and \
                        ev.start_s > self._hold.deadline_s:
                    events.extend(self._release_hold("pause"))
                if self._hold is not None:  # the half second held back at a max_length cut
                    held, self._hold = self._hold, None
                    self.embedder.push_rows(held.rows)
                    self._seg_start = held.start_s
                    self._carried = (held.start_s, held.speech_s)
                events.append(SpeechStarted(self._seg_start))
            elif isinstance(ev, SegmentEnd):
                self._feed(pieces, events, t_s, ev.speech_s, ev.snr_db)
                self._end(ev, events)

    # -- public -----------------------------------------------------------------------
    @property
    def in_speech(self) -> bool:
        """An utterance is open (the speaker is talking)."""
        return self.segmenter.in_speech

    @property
    def noise_floor_dbfs(self) -> float:
        """The segmenter's current estimate of the background level (dB relative to full scale)."""
        return self.segmenter.noise_floor_dbfs

    @property
    def position_s(self) -> float:
        """Stream time consumed so far (seconds)."""
        return 0.0 if self._n0 is None else (self._n0 + len(self._pending)) / SAMPLE_RATE_HZ

    def _resolved(self, items) -> list[Event]:
        """Events, with the decisions of the worker waited for (in order), counted."""
        out = []
        for item in items:
            if isinstance(item, Future):
                item = item.result()
                if item is None:
                    continue
                if isinstance(item, list):  # a segment split at speaker changes
                    for part in item:
                        self.tally.add(part)
                    out.extend(item)
                    continue
            self.tally.add(item)
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
                if self._hold is not None and self._hold.deadline_s is not None and \
                        t >= self._hold.deadline_s and not self.segmenter.in_speech:
                    events.extend(self._release_hold("pause"))  # nobody spoke on
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
        self.tally.stream_s = max(self.tally.stream_s, chunk.end_s)
        return events

    def _close_stream(self, reason: str) -> list[Event]:
        events: list[Event] = []
        pieces: list[np.ndarray] = []
        tail = self._pending if reason == "end_of_stream" else None
        for ev in self.segmenter.flush(tail):
            if isinstance(ev, SegmentEnd):
                ev = dataclasses.replace(ev, reason=reason)
            self._handle([ev], events, pieces, ev.end_s if isinstance(ev, SegmentEnd) else 0.0)
        if self._hold is not None:  # the stream stopped right at a max_length cut
            events.extend(self._release_hold(reason))
        self._carried = None
        self._pending = np.zeros(0, dtype=np.float32)
        self._unfed, self._unfed_n = [], 0
        self.features.reset()
        self.embedder.reset()
        return events

    def finish(self) -> list[Event]:
        """End of stream: decide on an open segment (after any events :meth:`process` had not
        yielded yet, e.g. when it was interrupted). The verifier is then reset; its
        :attr:`tally` is kept for :meth:`summary`."""
        pending = list(self._out)
        self._out.clear()
        events = self._resolved(pending + self._close_stream("end_of_stream"))
        self.reset()
        return events

    def summary(self, *, interrupted: bool = False, error: str | None = None,
                source: FrameSource | None = None) -> Summary:
        """What this verifier decided, as the stream's last event (with ``source``, its final
        overflow count and position, for a stream that an interruption or error cut short)."""
        if source is not None:
            self.overflows = max(self.overflows, source.overflows)
            self.tally.stream_s = max(self.tally.stream_s, source.position_s)
        self.tally.overflows = max(self.tally.overflows, self.overflows)
        return self.tally.summary(interrupted=interrupted, error=error)

    def _ready(self) -> Iterator[Event]:
        """Pop the events at the head of the queue whose decisions are done (waiting for the
        oldest when too many are in flight), counted."""
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
                if isinstance(head, list):  # a segment split at speaker changes
                    for part in head:
                        self.tally.add(part)
                        yield part
                    continue
            else:
                out.popleft()
            self.tally.add(head)
            yield head

    def process(self, source: FrameSource | Iterable[Chunk]) -> Iterator[Event]:
        """All events of a whole source, in stream order, ending with :meth:`finish`: the
        pipeline's own, and those the source yields between its chunks (a lost device)."""
        source = as_source(source)
        for item in source:
            self.overflows = source.overflows
            if isinstance(item, Event):
                self._out.append(item)
            else:
                self._out.extend(self._push(item))
            yield from self._ready()
        self.overflows = source.overflows
        self.tally.stream_s = max(self.tally.stream_s, source.position_s)
        yield from self.finish()  # waits for what is still queued, in order

    def close(self) -> None:
        """Stop the worker threads (if any)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)


def _event(d: Decision, end: SegmentEnd, t: float, **fields) -> DecisionEvent:
    """The event of decision ``d`` on (part of) the segment ``end`` closed; ``fields``: where it
    lies, its speech, end reason, embedding, band and fall; ``t``: when deciding began."""
    return DecisionEvent(speaker=d.speaker, best=d.best, score=d.score, accepted=d.accepted,
                         scores=d.scores, threshold=d.threshold, margin=d.margin,
                         reason=d.reason, clipped=end.clipped, level_dbfs=end.level_dbfs,
                         decision_ms=(time.perf_counter() - t) * 1000.0, snr_db=end.snr_db,
                         **fields)


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
    snr_db: float | None = None
    """Estimated SNR of the pooled utterances (decibels; :func:`pooled_snr_db`), None when none
    was estimated."""
    fall_db: float | None = None
    """Their steepest fall (dB per 10 ms; :func:`pooled_fall_db`), None when none was
    estimated."""

    @property
    def band(self) -> str:
        """The band of the pooled speech (:func:`pooled_band`)."""
        return pooled_band(self.decisions)

    @classmethod
    def pool(cls, decisions: list[DecisionEvent], dim: int) -> "RecordingEmbedding":
        """The normalised mean of all the window embeddings of ``decisions``."""
        total = np.zeros(dim, dtype=np.float64)
        for d in decisions:
            total += d.window_sum
        n_windows = sum(d.n_windows for d in decisions)
        vector = (total / np.linalg.norm(total)).astype(np.float32) if n_windows else None
        return cls(vector, sum(d.speech_s for d in decisions), n_windows, list(decisions),
                   any(d.clipped for d in decisions), pooled_snr_db(decisions),
                   pooled_fall_db(decisions))


def pooled_band(decisions: Sequence[DecisionEvent]) -> str:
    """The band of several utterances decided as one (a recording, a Wyoming request):
    ``narrow`` when at least half their speech was narrowband (each decision's ``band``: nothing
    above 4 kHz), else ``wide``; which voiceprint embedding they are scored against (issue 12,
    band-matched scoring)."""
    narrow = sum(d.speech_s for d in decisions if d.band == "narrow")
    total = sum(d.speech_s for d in decisions)
    return "narrow" if decisions and narrow >= 0.5 * total else "wide"


def pooled_snr_db(decisions: Iterable[DecisionEvent]) -> float | None:
    """The estimated SNR of several utterances decided as one (a recording, a Wyoming request):
    the mean of their ``snr_db`` weighted by their voiced seconds (decibels; None when none has
    one)."""
    return speech_weighted((d.snr_db, d.speech_s) for d in decisions)


def pooled_fall_db(decisions: Iterable[DecisionEvent]) -> float | None:
    """The steepest fall of several utterances decided as one: the mean of their ``fall_db``
    weighted by their voiced seconds (None when none has one)."""
    return speech_weighted((d.fall_db, d.speech_s) for d in decisions)


def speech_weighted(pairs: Iterable[tuple[float | None, float]]) -> float | None:
    """The mean of the known values of ``(value, voiced seconds)`` pairs, weighted by their
    speech (None or non-finite values left out; None when none is known): how several
    utterances' or takes' estimates pool into one."""
    known = [(x, max(float(w), 1e-6)) for x, w in pairs if x is not None and np.isfinite(x)]
    if not known:
        return None
    weights = np.array([w for _, w in known])
    return float(np.dot([x for x, _ in known], weights) / weights.sum())


def embed_recording(session: EncoderSession, chunks: FrameSource | Iterable[Chunk], *,
                    segmenter: SegmenterConfig = SegmenterConfig(),
                    max_pending: int = 8, join_pauses: bool = True) -> RecordingEmbedding:
    """Run a recording through the same path as live audio (VAD, features, windows) and pool
    all its utterances into one embedding (the normalised mean of all window embeddings).

    :param join_pauses: pauses shorter than ``segmenter.recording_pause_ms`` do not split it
        (:meth:`~rtverify.config.SegmenterConfig.for_recording`); False: its decisions are the
        utterances ``listen`` would decide (every pause of ``pause_ms`` ends one).
    """
    if join_pauses:
        segmenter = segmenter.for_recording()
    verifier = Verifier(session, {}, segmenter=segmenter, max_pending=max_pending,
                        provisional=False, bands=True)
    decisions = [e for e in verifier.process(chunks) if isinstance(e, DecisionEvent)]
    return RecordingEmbedding.pool(decisions, session.dim)
