"""Speaker changes inside a segment: two people talking back to back are two decisions.

The segmenter cuts at pauses; people in a conversation often leave none, and one embedding of a
target's turn merged with an impostor's is either rejected or lets the impostor ride on the
target's score. Two stages, so that the work is spent only where a change is likely:

1. :class:`TurnEmbedder` is the pipeline's :class:`~rtverify.core.encoder.SegmentEmbedder` that
   also keeps each window's embedding and the segment's spectrogram rows. A window that sounds
   unlike the windows before it (cosine to their mean below ``suspect_cos``) marks a *suspected*
   change; while someone is still talking (windows embedded one by one), a window below
   ``restart_cos`` restarts the provisional score there.
2. At the segment's end, only when a change was suspected, :func:`find_turns` embeds short
   overlapping windows (``fine_rows`` long, every ``fine_hop_rows``) and looks for the split
   whose two sides differ most (the distance between their mean embeddings, weighted by how
   many windows each side holds); above ``split_distance`` it is a change (found
   again on each side, for a third voice). Each part is then decided on its own. With
   voiceprints to score against, the pipeline places a change only where it can matter: when
   some window of the segment scores near a voice's threshold (a change between two strangers
   leaves both parts rejected, as one decision would).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np

from .encoder import (EncoderSession, SegmentEmbedder, SegmentEmbedding, embed_segment,
                      l2_normalize)


@dataclass(frozen=True)
class TurnConfig:
    """Speaker-change detection inside segments."""

    enabled: bool = True
    suspect_cos: float = 0.80
    """A window whose cosine to the mean of the earlier windows (or any two windows of a
    segment) falls below this suspects a change (cosine)."""
    restart_cos: float = 0.65
    """A window this unlike the earlier ones (cosine) restarts the provisional score there: a
    wrong restart costs a provisional score its history, so the bar is lower than
    ``suspect_cos``, which only asks for a closer look at the segment's end."""
    split_distance: float = 0.331
    """A split is a change of speaker when its distance (:func:`best_split`: one minus the
    cosine between the mean embeddings of the short windows on each side, times
    ``sqrt(n_left * n_right / n)``) reaches this. Measured on 3-6 s pieces of 100 LibriSpeech
    speakers outside issue 12's stream targets (``python -m tools.turn_bars --model
    default-short``): one speaker's pieces reach it 5 % of the time; 96 % of two speakers'
    pieces do, 94 % with the change placed within 0.5 s."""
    fine_rows: int = 100
    """Length of the short windows that place a change (spectrogram rows, 10 ms each)."""
    fine_hop_rows: int = 30
    """Step between the short windows (rows); also the grid a change is placed on."""
    min_turn_rows: int = 100
    """Neither side of a change may be shorter than this (rows)."""
    min_side_rows: int = 400
    """A side of a change is searched for another change only if at least this long (rows):
    one 3 s turn is not worth the risk of a false split."""
    edge_rows: tuple[int, ...] = (100,)
    """Lengths (rows) of the segment's first and last rows that are checked for another voice
    on their own (:func:`find_edges`): a change less than ``min_turn_rows`` from the segment's
    edge (a turn that began just before a max_length cut, or the end of someone's turn
    before the next one's start without a pause) cannot be placed by :func:`find_turns`."""
    edge_cos: tuple[float, ...] = (0.64,)
    """For each of ``edge_rows``: an edge whose embedding has a cosine below this to the mean
    of the segment's own windows beside it is another voice. Measured on 40 LibriSpeech
    speakers (``python -m tools.turn_bars --edge-rows 100``): one speaker's own last or first
    second falls below it 5 % of the time; a second holding 0.75 s of another voice 82 % of
    the time, 1 s of it 95 % (0.5 s: 46 %; the issue allows an impostor min(1 s, a quarter of
    the turn) under a target's decision). Two lengths (0.75 and 1 s) found no more and cost a
    second model call per check."""
    edge_skip_rows: tuple[int, int] = (0, 0)
    """Rows at the segment's start and end that the edge checks skip: the audio a model asks
    for around the speech (sidecar ``segment_context_ms``; CAM++ 500 and 450 ms), so that the
    edge checked is the first and last second of speech, not half a second of silence that
    sounds unlike any voice (CAM++ split 13 of 240 lone utterances so)."""
    edge_min_rest_rows: int = 150
    """An edge is checked only when at least this many rows remain beside it (the rest it is
    compared with)."""

    @classmethod
    def for_model(cls, raw_sidecar: dict) -> "TurnConfig":
        """The defaults above (measured on the LSTM without room training, ``default-short``;
        the room-trained default carries its own) with the model's own
        values from its sidecar's ``turns`` block: cosines are each model's own scale (CAM++'s
        are far lower between and within speakers), so a model other than the LSTM carries its
        measured bars there. Unknown keys or wrong types are a ModelError. ``split_contrast``
        (sidecars before stop 22: a bar of the within-minus-across statistic that
        :func:`best_split` no longer computes) is ignored: such a model gets the default
        ``split_distance`` until its bars are measured again."""
        from ..errors import ModelError

        block = raw_sidecar.get("turns") or {}
        if isinstance(block, dict):
            block = {k: v for k, v in block.items() if k != LEGACY_SPLIT_KEY}
        known = {f.name for f in fields(cls)}
        try:
            if not isinstance(block, dict) or set(block) - known:
                raise ValueError(f"unknown keys {sorted(set(block) - known)}"
                                 if isinstance(block, dict) else "not an object")
            vals = {k: (tuple(float(x) for x in v) if k == "edge_cos" else
                        tuple(int(x) for x in v) if k in ("edge_rows", "edge_skip_rows") else
                        bool(v) if k == "enabled" else type(getattr(cls, k))(v))
                    for k, v in block.items()}
            ctx = raw_sidecar.get("segment_context_ms") or {}
            if "edge_skip_rows" not in vals and ctx:  # 10 ms rows
                vals["edge_skip_rows"] = (int(ctx.get("pre", 0)) // 10,
                                          int(ctx.get("post", 0)) // 10)
            cfg = replace(cls(), **vals)
            if len(cfg.edge_rows) != len(cfg.edge_cos) or min(cfg.edge_rows, default=1) < 1:
                raise ValueError("edge_rows and edge_cos must pair up")
        except (TypeError, ValueError) as err:
            raise ModelError(f"invalid model sidecar block 'turns' ({err})") from None
        return cfg


LEGACY_SPLIT_KEY = "split_contrast"

FINE_BATCH_ROWS = 1280
"""Rows of short windows embedded in one model call (the pipeline's batch: 8 windows of 160)."""


def embed_windows(session: EncoderSession, rows: np.ndarray, starts, w: int) -> np.ndarray:
    """Embeddings of the ``w``-row windows of ``rows`` that begin at ``starts``, float64
    ``(len(starts), dim)``: in calls of at most :data:`FINE_BATCH_ROWS` rows, the size of the
    pipeline's own batches (a 6 s segment holds 17 windows of a second, and one call for all of
    them grew listen's peak memory by 2.4 MiB)."""
    per_call = max(1, FINE_BATCH_ROWS // w)
    return np.concatenate([session.embed(np.stack([rows[s:s + w] for s in starts[a:a + per_call]]))
                           for a in range(0, len(starts), per_call)]).astype(np.float64)


@dataclass(frozen=True)
class Turn:
    """One speaker's part of a segment."""

    start_row: int
    end_row: int
    """Rows ``[start_row, end_row)`` of the segment's spectrogram."""
    vector: np.ndarray
    """Unit embedding, float32 ``(dim,)``."""
    window_sum: np.ndarray
    """Its share of the segment's window embeddings, summed, float64 ``(dim,)`` (the turns'
    shares add up to the unsplit segment's sum; a share may be zero)."""
    n_windows: int


class TurnEmbedder(SegmentEmbedder):
    """A :class:`SegmentEmbedder` that keeps what speaker-change detection needs: every window
    embedding (``windows``: float32 ``(dim,)`` each, in order) and the segment's rows.

    :attr:`suspected` is set when a window sounds unlike the earlier ones; :meth:`current` (the
    provisional embedding) then pools only the windows since the last suspected change.
    """

    def __init__(self, session: EncoderSession, *, max_pending: int = 1,
                 cfg: TurnConfig | None = None) -> None:
        self.cfg = TurnConfig.for_model(session.info.raw) if cfg is None else cfg
        super().__init__(session, max_pending=max_pending)

    def reset(self) -> None:
        super().reset()
        self.last_rows: np.ndarray | None = None
        """The rows of the segment :meth:`finish_turns` last closed (for its band)."""
        self.last_windows: list[np.ndarray] = []
        """That segment's window embeddings, in order (:meth:`prefix_embedding`)."""
        self.windows: list[np.ndarray] = []
        self._all_rows: list[np.ndarray] = []
        self.suspected = False
        self._turn_from = 0  # index in self.windows where the current turn began

    def push_rows(self, rows: np.ndarray) -> bool:
        if len(rows):
            self._all_rows.append(rows)
        return super().push_rows(rows)

    def _embedded(self, emb: np.ndarray) -> None:
        for e in emb:
            self._note(e)

    def _note(self, emb: np.ndarray) -> None:
        if self.cfg.enabled and self._turn_from < len(self.windows):
            before = l2_normalize(np.mean(self.windows[self._turn_from:], axis=0))
            cos = float(np.dot(before, emb))
            if cos < self.cfg.suspect_cos:
                self.suspected = True
            if cos < self.cfg.restart_cos:
                self._turn_from = len(self.windows)
        self.windows.append(emb)

    def current(self) -> np.ndarray | None:
        """Unit embedding of the windows of the current turn, or None."""
        if len(self.windows) <= self._turn_from or self._turn_from == 0:
            return super().current()
        return l2_normalize(np.mean(self.windows[self._turn_from:], axis=0))

    @property
    def turn_start_row(self) -> int:
        """Row at which the current turn's first window began (0 without a suspected change)."""
        if self._turn_from == 0:
            return 0
        return self._turn_from * self.window.hop_frames

    @property
    def turn_restarted(self) -> bool:
        """The latest window began a new turn (the provisional score restarts)."""
        return self._turn_from > 0 and self._turn_from == len(self.windows) - 1

    def rows(self) -> np.ndarray:
        """Every row of the segment so far, float32 ``(n_rows, n_mels)``."""
        if not self._all_rows:
            return np.zeros((0, self.session.features.n_mels), dtype=np.float32)
        return np.concatenate(self._all_rows)

    def finish_turns(self, worth: Callable[[np.ndarray], bool] | None = None,
                     edge_worth: Callable[[np.ndarray], bool] | None = None,
                     edge_matters: Callable[[np.ndarray], bool] | None = None
                     ) -> tuple[list[Turn], int] | None:
        """Close the segment like :meth:`finish`; return its turns (one unless a change was
        found) and its row count, or None if it had no rows. Resets.

        :param worth: given the window embeddings, float32 ``(n, dim)``, whether placing a
            suspected change is worth its cost (the pipeline: whether any voice could be
            accepted in part of the segment); None: always.
        :param edge_worth: given the whole segment's embedding, float32 ``(dim,)``, whether to
            check its edges for another voice (:func:`find_edges`; the pipeline: whether the
            segment as one decision would be accepted, or nearly); None: never (enrolment and
            evaluation pool a recording's windows anyway).
        :param edge_matters: given an edge that sounds unlike the rest (its embedding,
            float32 ``(dim,)``), whether splitting it off can change a decision (the pipeline:
            unless the edge alone would be accepted as the voice); None: always.
        """
        cfg = self.cfg
        rows = self.rows()
        n_rows = self.n_rows
        # windows embedded in finish() (the tail, or all of them in batched mode) are noted too
        seg = self.finish_keep()
        if seg is None:
            self.reset()
            return None
        suspected = self.suspected or (len(self.windows) >= 2 and _min_pair_cos(self.windows)
                                       < cfg.suspect_cos)
        turns = None
        cuts: list[int] = []
        if cfg.enabled and suspected and n_rows >= 2 * cfg.min_turn_rows and (
                worth is None or worth(np.stack(self.windows))):
            cuts = find_turns(self.session, rows, cfg)
        # (a segment shorter than the model's window has no windows of its own: the edges'
        # rest is then embedded in short windows)
        if cfg.enabled and edge_worth is not None and edge_worth(seg.vector):
            cuts = _with_edges(self.session, rows, cuts, cfg, self.own_windows(n_rows),
                               edge_matters)
        if cuts:
            bounds = list(zip([0] + cuts, cuts + [n_rows]))
            pooled = self._window_shares(bounds, n_rows)
            turns = [_embed_turn(self.session, rows[a:b], a, b, pool)
                     for (a, b), pool in zip(bounds, pooled)]
        if turns is None:
            turns = [Turn(0, n_rows, seg.vector, seg.window_sum, seg.n_windows)]
        windows = self.windows
        self.reset()
        self.last_rows = rows
        self.last_windows = windows
        return turns, n_rows

    def prefix_embedding(self, n: int) -> SegmentEmbedding | None:
        """The embedding of the first ``n`` rows of the segment :meth:`finish_turns` last
        closed, from that segment's windows wholly inside them (no model call): what
        :func:`~rtverify.core.encoder.embed_segment` makes of those rows less the tail window it
        adds when at least ``min_tail_frames`` rows follow the last whole window (embedding it
        cost ``listen`` 6 % more CPU on the benchmark's recording, for no better turn). None
        when no window fits (then embed the rows)."""
        w, hop = self.window.window_frames, self.window.hop_frames
        k = 0 if n < w else min((n - w) // hop + 1, len(self.last_windows))
        if k == 0 or self.last_rows is None:
            return None
        total = np.sum(self.last_windows[:k], axis=0, dtype=np.float64)
        return SegmentEmbedding(l2_normalize(total), total, k)

    def own_windows(self, n_rows: int):
        """The segment's window embeddings as :func:`edge_cosines` takes them (``own``):
        float64 ``(k, dim)``, their start rows and their length; None without any."""
        if not self.windows:
            return None
        return (np.stack(self.windows).astype(np.float64),
                np.array(window_starts(n_rows, len(self.windows), self.window)),
                self.window.window_frames)

    def _window_shares(self, bounds: list[tuple[int, int]], n_rows: int) -> list[np.ndarray]:
        """The segment's own window embeddings summed per turn (each window to the turn that
        holds its centre), float64 ``(dim,)`` each: together exactly the unsplit segment's
        ``window_sum``, so that pooling a recording's decisions (``embed_recording``: enrolment,
        ``eval``) gives the same vector whether or not a segment was split."""
        w = self.window.window_frames
        starts = window_starts(n_rows, len(self.windows), self.window)
        out = [np.zeros(self.session.dim, dtype=np.float64) for _ in bounds]
        for start, emb in zip(starts, self.windows):
            centre = start + w // 2
            k = next((i for i, (a, b) in enumerate(bounds) if a <= centre < b), len(bounds) - 1)
            out[k] += emb
        return out

    def finish_keep(self):
        """:meth:`SegmentEmbedder.finish` without the reset (windows and rows stay)."""
        windows, all_rows, suspected = self.windows, self._all_rows, self.suspected
        turn_from = self._turn_from
        self._turn_from = 1 << 30  # past every window: current() pools them all, _note suspects nothing
        seg = SegmentEmbedder.finish(self)  # resets through self.reset()
        self.windows, self._all_rows, self.suspected = windows, all_rows, suspected
        self._turn_from = turn_from
        return seg


def window_starts(n_rows: int, n_windows: int, window) -> list[int]:
    """First row of each of a segment's ``n_windows`` window embeddings, in the order the
    embedder made them: every ``hop_frames`` from 0, then the end-aligned tail (a segment
    shorter than a window has only views of all of it, each at 0)."""
    w, hop = window.window_frames, window.hop_frames
    regular = (n_rows - w) // hop + 1 if n_rows >= w else 0
    starts = [i * hop for i in range(min(regular, n_windows))]
    return starts + [max(0, n_rows - w)] * (n_windows - len(starts))


def _min_pair_cos(windows: list[np.ndarray]) -> float:
    m = np.stack(windows)
    sims = m @ m.T
    return float(sims.min())


def _embed_turn(session: EncoderSession, rows: np.ndarray, a: int, b: int,
                pooled: np.ndarray) -> Turn:
    """One turn: its embedding made the way a segment of its own would be (for its decision),
    and ``pooled``, its share of the segment's window embeddings (for pooling)."""
    seg = embed_segment(session, rows)
    return Turn(a, b, seg.vector, pooled, seg.n_windows)


def find_turns(session: EncoderSession, rows: np.ndarray, cfg: TurnConfig = TurnConfig(),
               offset: int = 0, depth: int = 0) -> list[int]:
    """Rows (from ``offset``) at which the speaker changes in ``rows``, float32
    ``(n, n_mels)``; empty if none is found."""
    n = len(rows)
    if n < 2 * cfg.min_turn_rows or n < cfg.fine_rows + cfg.fine_hop_rows:
        return []
    best, distance, _ = best_split(session, rows, cfg)
    if best is None or distance < cfg.split_distance:
        return []
    out = [offset + best]
    if depth < 1:  # a third voice: each side once more, if long enough to hold two turns
        left = find_turns(session, rows[:best], cfg, offset, depth + 1) \
            if best >= cfg.min_side_rows else []
        right = find_turns(session, rows[best:], cfg, offset + best, depth + 1) \
            if n - best >= cfg.min_side_rows else []
        out = left + out + right
    return out


def best_split(session: EncoderSession, rows: np.ndarray, cfg: TurnConfig = TurnConfig()
               ) -> tuple[int | None, float, np.ndarray]:
    """The split of ``rows`` whose two sides differ most: ``(row, distance, sims)``, the row
    (None when no split leaves ``min_turn_rows`` on each side), its distance and the cosine
    matrix of the ``fine_rows`` windows every ``fine_hop_rows``.

    The distance of a split between windows ``k - 1`` and ``k`` of ``n`` is one minus the
    cosine between the mean embeddings of the windows on each side, times
    ``sqrt(k (n - k) / n)``: two sides that differ are more surely two people when each holds
    more windows, and a side of one window (a second) is not trusted as much as three. (Until
    stop 22 the statistic was the within-side minus the across mean cosine, whose within-side
    means counted each window's cosine to itself: a one-window side looked perfectly
    consistent, and one odd last second could outrank the true change; figures in README,
    "Back-to-back turns".)"""
    n, w, hop = len(rows), cfg.fine_rows, cfg.fine_hop_rows
    starts = list(range(0, n - w + 1, hop))
    emb = embed_windows(session, rows, starts, w)
    sims = emb @ emb.T
    k_all = len(starts)
    # running sums: the mean of each side for every split in one pass
    left = np.cumsum(emb, axis=0)
    total = left[-1]
    best, best_distance = None, -1.0
    for k in range(1, k_all):
        cut = starts[k - 1] + w // 2 + hop // 2  # between the two windows' centres
        if cut < cfg.min_turn_rows or n - cut < cfg.min_turn_rows:
            continue
        a, b = left[k - 1], total - left[k - 1]
        cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        distance = (1.0 - cos) * float(np.sqrt(k * (k_all - k) / k_all))
        if distance > best_distance:
            best, best_distance = cut, distance
    return best, best_distance, sims


def _with_edges(session: EncoderSession, rows: np.ndarray, cuts: list[int],
                cfg: TurnConfig, own=None, matters=None) -> list[int]:
    """``cuts`` with a cut added where the segment's first or last ``edge_rows`` are another
    voice than the rest of their turn. ``own``: the segment's window embeddings, their start
    rows and length (see :func:`find_edges`)."""
    n = len(rows)
    if not cfg.edge_rows:  # edge checks switched off
        return cuts
    skip_head, skip_tail = cfg.edge_skip_rows
    if skip_head or skip_tail:  # the model's context around the speech: checked without it
        inner = rows[skip_head:n - skip_tail]
        if own is not None:
            own = (own[0], own[1] - skip_head, own[2])
        inner_cuts = [c - skip_head for c in cuts if 0 < c - skip_head < len(inner)]
        if len(inner_cuts) != len(cuts):
            return cuts
        plain = replace(cfg, edge_skip_rows=(0, 0))
        # parts long enough inside are longer still with the context put back
        return [c + skip_head for c in _with_edges(session, inner, inner_cuts, plain, own, matters)]
    if not cuts:
        head, tail = find_edges(session, rows, cfg, own=own, matters=matters)
    else:
        head = find_edges(session, rows[:cuts[0]], cfg, tail=False, own=own, matters=matters)[0]
        if own is not None:
            own = (own[0], own[1] - cuts[-1], own[2])
        tail = find_edges(session, rows[cuts[-1]:], cfg, head=False, own=own,
                          matters=matters)[1]
        tail = None if tail is None else cuts[-1] + tail
    out = ([head] if head else []) + list(cuts) + ([tail] if tail else [])
    return out if all(b - a >= min(cfg.edge_rows) for a, b in zip([0] + out, out + [n])) else cuts


def edge_cosines(session: EncoderSession, rows: np.ndarray, cfg: TurnConfig = TurnConfig(), *,
                 head: bool = True, tail: bool = True, own=None
                 ) -> tuple[list[float] | None, list[float] | None]:
    """Cosine of the first (``head``) and the last (``tail``) rows of ``rows``, float32
    ``(n, n_mels)``, in each of ``cfg.edge_rows`` lengths, to the mean of the windows beside
    the longest edge on that side; None for a side not checked or without enough rows.

    :param own: the segment's own window embeddings (float ``(k, dim)``), their start rows
        (relative to ``rows``; windows not wholly inside are ignored) and their length: the
        windows the pipeline has already embedded, so the rest costs nothing. A side where none
        of them lies wholly beside the edge embeds ``fine_rows`` windows, half as far apart."""
    n, longest = len(rows), max(cfg.edge_rows, default=0)
    if not cfg.edge_rows or not (head or tail) or n - longest < cfg.edge_min_rest_rows:
        return None, None

    def centres(emb, starts, w):
        inside = (starts >= 0) & (starts + w <= n)
        pick = {"head": inside & (starts >= longest) if head else None,
                "tail": inside & (starts + w <= n - longest) if tail else None}
        return {k: l2_normalize(emb[m].mean(axis=0)) if m is not None and m.any() else None
                for k, m in pick.items()}

    found = centres(*own) if own is not None else {"head": None, "tail": None}
    if (head and found["head"] is None) or (tail and found["tail"] is None):
        w = cfg.fine_rows
        starts = np.arange(0, n - w + 1, max(1, w // 2))
        if len(starts):
            fine = embed_windows(session, rows, starts, w)
            more = centres(fine, starts, w)
            found = {k: found[k] if found[k] is not None else more[k] for k in found}
    out: dict[str, list[float] | None] = {"head": None, "tail": None}
    emb = {e: session.embed(np.stack([rows[:e], rows[n - e:]])).astype(np.float64)
           for e in cfg.edge_rows}  # one call per length: a batch holds one length
    for side, k in (("head", 0), ("tail", 1)):
        if found[side] is not None:
            out[side] = [float(emb[e][k] @ found[side]) for e in cfg.edge_rows]
    return out["head"], out["tail"]


def find_edges(session: EncoderSession, rows: np.ndarray, cfg: TurnConfig = TurnConfig(), *,
               head: bool = True, tail: bool = True, own=None,
               matters: Callable[[np.ndarray], bool] | None = None
               ) -> tuple[int | None, int | None]:
    """Whether the first or the last rows of ``rows`` are another voice than the rest:
    ``(head_cut, tail_cut)``, the row at which such an edge ends or begins, None where not (or
    not checked). An edge is another voice when, in some of ``cfg.edge_rows`` lengths, its
    cosine (:func:`edge_cosines`) falls below that length's ``cfg.edge_cos``; the cut then
    takes the longest such length. With ``matters``, an edge is split off only if it says so
    of the edge's embedding (one more model call, made only for an edge that fired)."""
    hc, tc = edge_cosines(session, rows, cfg, head=head, tail=tail, own=own)
    fired = lambda cos: [e for e, c, bar in zip(cfg.edge_rows, cos, cfg.edge_cos)  # noqa: E731
                         if c < bar] if cos is not None else []
    h, t = fired(hc), fired(tc)
    if matters is not None:
        h = h if h and matters(session.embed(rows[None, :max(h)])[0]) else []
        t = t if t and matters(session.embed(rows[None, len(rows) - max(t):])[0]) else []
    return (max(h) if h else None), (len(rows) - max(t) if t else None)
