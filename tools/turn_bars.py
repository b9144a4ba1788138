"""Measure a model's bars for speaker changes inside a segment (``TurnConfig``), on LibriSpeech.

    .venv/bin/python -m tools.turn_bars --data ../shared/data [--model campp] [--speakers 40]

Speakers are ``tools/room_streams.py``'s (with another seed, 77, than its streams):

* **split distance** (what :func:`rtverify.core.turns.find_turns` maximises): the best split's
  distance on 3-6 s of one speaker (three pieces per speaker, anywhere in their probes), and on
  3-6 s of two (1 s or more of each, 0-150 ms apart, either first; three per speaker), for
  ``--split-speakers`` speakers outside the 40 targets of ``tools/room_streams.py``'s streams;
  prints the bar that one-speaker pieces reach ``--split-far`` of the time, how many changes
  it finds and places within 0.5 s, and the mean cosine between a one-speaker piece's windows;
* **edges** (:func:`rtverify.core.turns.find_edges`): 3-5 s of a speaker with 0.5, 0.75 or 1 s
  of another appended or prepended (0-150 ms apart), and the same 3-5 s alone; the cosine of
  each edge length in ``--edge-rows`` to the mean of the segment's own windows beside it (as
  ``listen`` computes it: :func:`rtverify.core.turns.edge_cosines`). For a target
  false-alarm rate (``--edge-far``, split over the lengths) prints each length's bar and how
  often another voice's edge of each length falls below some bar; and the same at the bars
  the model uses (``edges_at_model_bars``: its sidecar's, or the defaults).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tools import room_streams as rs

SR = rs.SR


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--model", help="a shipped model's name or a path (default: the default)")
    p.add_argument("--speakers", type=int, default=40)
    p.add_argument("--split-speakers", type=int, default=100)
    p.add_argument("--split-far", type=float, default=0.05,
                   help="share of one-speaker pieces allowed over the split bar (default 0.05)")
    p.add_argument("--edge-rows", default="75,100")
    p.add_argument("--edge-far", type=float, default=0.05)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    from rtverify.core.encoder import EncoderSession
    from dataclasses import replace

    from rtverify.core.turns import (TurnConfig, TurnEmbedder, _min_pair_cos, best_split,
                                     edge_cosines)

    session = EncoderSession(args.model)
    cfg = TurnConfig.for_model(session.info.raw)
    targets, impostors = rs.speakers(args.data, args.speakers, seed=77)

    def rows_of(audio):
        f = session.streaming_features()
        parts = [f.push(audio.astype(np.float32)), f.flush()]
        return np.concatenate([x for x in parts if len(x)])

    # split pieces: speakers outside the streams' targets, so the bar is not fitted to them
    stream_names = {t.name for t in rs.speakers(args.data, 40)[0]}
    pool = [t for t in rs.speakers(args.data, args.split_speakers + 60, seed=77)[0]
            if t.name not in stream_names][:args.split_speakers]

    def suspicion(rows):
        """The highest ``suspect_cos`` at which ``listen`` would suspect a change in ``rows``:
        the lowest cosine of a window to the mean of the windows before it, or between any two
        windows (:class:`~rtverify.core.turns.TurnEmbedder`; its restarts, below
        ``restart_cos``, are suspected at any bar anyway)."""
        emb = TurnEmbedder(session, max_pending=8, cfg=replace(cfg, enabled=False))
        emb.push_rows(rows)
        emb.finish_keep()
        if len(emb.windows) < 2:
            return 1.0
        w = np.stack(emb.windows).astype(np.float64)
        run = np.cumsum(w, axis=0)[:-1]
        run /= np.linalg.norm(run, axis=1, keepdims=True)
        return min(_min_pair_cos(emb.windows), float(np.einsum("ij,ij->i", run, w[1:]).min()))

    rng = np.random.default_rng(3)
    one, two, wcos = [], [], []
    one_sus, two_sus = [], []
    for t in pool:
        x = np.concatenate(t.probes)
        for _ in range(3):
            n = int(rng.uniform(3.0, 6.0) * SR)
            if len(x) >= n:
                a = int(rng.integers(0, len(x) - n + 1))
                rows = rows_of(x[a:a + n] + rs._bed(n, rng))
                _, dist, sims = best_split(session, rows, cfg)
                one.append(dist)
                one_sus.append(suspicion(rows))
                wcos.append(float(sims[np.triu_indices(len(sims), 1)].mean()))
        others = [u for u in pool if u is not t]
        for _ in range(3):
            total = rng.uniform(3.0, 6.0)
            first_s = rng.uniform(1.0, total - 1.0)
            y = np.concatenate(others[rng.integers(len(others))].probes)
            own_first = bool(rng.integers(2))
            p1, p2 = (x, y) if own_first else (y, x)
            p1, p2 = p1[:int(first_s * SR)], p2[:int((total - first_s) * SR)]
            if len(p1) < 0.95 * first_s * SR or len(p2) < 0.95 * (total - first_s) * SR:
                continue
            gap = int(rng.uniform(0, 0.15) * SR)
            z = np.concatenate([p1, np.zeros(gap), p2])
            rows = rows_of(z + rs._bed(len(z), rng))
            cut, dist, _ = best_split(session, rows, cfg)
            two_sus.append(suspicion(rows))
            truth = (len(p1) + gap // 2) / 160  # rows: 10 ms in both front-ends
            two.append((dist, abs(cut - truth) if cut is not None else np.inf))
    one_a, two_a = np.array(one), np.array(two)
    split_bar = float(np.percentile(one_a, 100 * (1 - args.split_far)))

    def split_figures(bar):
        found = two_a[:, 0] >= bar
        return {"bar": round(bar, 3), "one_speaker_over": round(float((one_a >= bar).mean()), 3),
                "changes_found": round(float(found.mean()), 3),
                "found_within_0.5s": round(float((found & (two_a[:, 1] <= 50)).mean()), 3)}

    def suspect_figures(bar, split=cfg.split_distance):
        """At suspicion bar ``bar`` and the model's split bar: how often one speaker's piece is
        split (suspected and over the split bar) and how often two speakers' change is found."""
        s1, s2 = np.array(one_sus) < bar, np.array(two_sus) < bar
        return {"suspect_cos": bar, "one_speaker_suspected": round(float(s1.mean()), 3),
                "one_speaker_split": round(float((s1 & (one_a >= split)).mean()), 3),
                "two_speakers_suspected": round(float(s2.mean()), 3),
                "changes_found": round(float((s2 & (two_a[:, 0] >= split)).mean()), 3)}

    lengths = [int(v) for v in args.edge_rows.split(",")]

    measure = replace(cfg, edge_rows=tuple(lengths), edge_cos=(0.0,) * len(lengths))

    def edge_cos(rows, at_end):
        """Each length's cosine, as listen computes it: against the segment's own windows."""
        emb = TurnEmbedder(session, max_pending=8, cfg=cfg)
        emb.push_rows(rows)
        emb.finish_keep()
        head, tail = edge_cosines(session, rows, measure, head=not at_end, tail=at_end,
                                  own=emb.own_windows(len(rows)))
        return tail if at_end else head

    rng = np.random.default_rng(5)
    own, other = [], {0.5: [], 0.75: [], 1.0: []}
    for t in targets:
        for probe in t.probes:
            base = probe[:int(rng.uniform(3, 5) * SR)]
            if len(base) < 2.5 * SR:
                continue
            imp = impostors[rng.integers(len(impostors))]
            for e_s in other:
                at_end = bool(rng.integers(2))
                gap = rs._bed(int(rng.uniform(0, 0.15) * SR), rng)
                edge = imp[:int(e_s * SR)] if at_end else imp[-int(e_s * SR):]
                mixed = np.concatenate([base, gap, edge] if at_end else [edge, gap, base])
                other[e_s].append(edge_cos(rows_of(mixed + rs._bed(len(mixed), rng)), at_end))
                own.append(edge_cos(rows_of(base + rs._bed(len(base), rng)), at_end))
    own_a = np.array(own)
    bars = [float(np.percentile(own_a[:, i], 100 * args.edge_far / len(lengths)))
            for i in range(len(lengths))]
    def fired(a, at=bars):
        return np.any(np.array(a) < np.array(at), axis=1)

    at_model = None
    if list(cfg.edge_rows) == lengths:  # the model's own bars, as listen uses them
        at_model = {"bars": list(cfg.edge_cos),
                    "own_edges_below_a_bar": round(float(fired(own, cfg.edge_cos).mean()), 3),
                    "another_voice_below_a_bar": {
                        str(k): round(float(fired(v, cfg.edge_cos).mean()), 3)
                        for k, v in other.items()}}
    out = {
        "model": session.model_id, "speakers": len(targets),
        "split_distance": {"pieces_one_two": [len(one_a), len(two_a)],
                           "one_speaker_p50_p95_p99": np.percentile(one_a, [50, 95, 99]).round(3).tolist(),
                           "two_speakers_p5_p10_p50": np.percentile(two_a[:, 0], [5, 10, 50]).round(3).tolist(),
                           "at_split_far": split_figures(split_bar),
                           "at_model_bar": split_figures(cfg.split_distance)},
        "suspicion": [suspect_figures(b) for b in
                      sorted({cfg.suspect_cos, 0.8, 0.85, 0.88, 0.9, 0.92, 1.01})],
        "window_cos_one_speaker_p5_p50": np.percentile(wcos, [5, 50]).round(3).tolist(),
        "edges": {"rows": lengths, "bars": [round(b, 3) for b in bars],
                  "own_edges_below_a_bar": round(float(fired(own).mean()), 3),
                  "another_voice_below_a_bar": {str(k): round(float(fired(v).mean()), 3)
                                                for k, v in other.items()}},
        "edges_at_model_bars": at_model,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
