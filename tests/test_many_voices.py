"""listen/serve with a large gallery: the Verifier scores many voices as one matrix product and
decides as it does with a few (issue 14, part 3)."""

import numpy as np

from conftest import chunks_of
from rtverify.core.pipeline import Verifier
from rtverify.events import DecisionEvent

SR = 16000


def _decisions(session, voices, x):
    v = Verifier(session, voices, max_pending=8)
    return [e for e in v.process(chunks_of(x, 4096)) if isinstance(e, DecisionEvent)]


def test_a_large_gallery_decides_like_a_small_one(session, conversation, alice_print):
    rng = np.random.default_rng(7)
    strangers = rng.standard_normal((3000, session.dim)).astype(np.float32)
    strangers /= np.linalg.norm(strangers, axis=1, keepdims=True)
    many = {f"s{i:04d}": strangers[i] for i in range(len(strangers))}
    many["alice"] = alice_print
    assert len(many) >= Verifier.MATRIX_MIN_VOICES
    few = _decisions(session, {"alice": alice_print}, conversation)
    big = _decisions(session, many, conversation)
    assert [d.start_s for d in big] == [d.start_s for d in few]
    for a, b in zip(few, big):
        assert len(b.scores) == Verifier.TOP_SCORES  # the best ten, not three thousand
        if "alice" in b.scores:
            assert abs(b.scores["alice"] - a.scores["alice"]) < 1e-4
        assert (a.speaker, a.accepted) == (b.speaker, b.accepted)
    assert sum(d.accepted for d in big) >= 3 and all(d.speaker in (None, "alice") for d in big)


def _gallery(session, n, seed, **named):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, session.dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    voices = {f"s{i:05d}": m[i] for i in range(n)}
    voices.update(named)
    return voices


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_the_pruned_split_check_answers_like_every_window_against_every_voice(session):
    """_split_sims scores a large gallery by the pooled direction and only the voices an angle
    bound lets through window by window: it must agree with the brute-force check always,
    including voices placed right at the edge of the bound."""
    rng = np.random.default_rng(3)
    checked = {True: 0, False: 0}
    for trial in range(60):
        # windows of one or two speakers (two directions), each a little off its speaker's
        a, b = _unit(rng.standard_normal((2, session.dim)))
        n = rng.integers(2, 12)
        who = rng.integers(0, 2, n) if trial % 3 else np.zeros(n, int)
        windows = _unit(np.where(who[:, None] == 0, a, b) + rng.uniform(0.1, 0.5) *
                        _unit(rng.standard_normal((n, session.dim))))
        named = {}
        for k in range(rng.integers(0, 4)):  # voices close to one window, not to the rest
            w = windows[rng.integers(len(windows))]
            named[f"near{k}"] = _unit(w + rng.uniform(0.1, 0.9) * _unit(
                rng.standard_normal(session.dim)))
        if trial % 2:  # a voice right at the bound: as far from the pooled direction as a
            # voice can be while the window farthest from it still scores just at the mark
            c = _unit(windows.sum(axis=0))
            far = windows[np.argmin(windows @ c)]
            theta = np.arccos(np.clip(far @ c, -1, 1))
            u = _unit(far - (far @ c) * c)
            beta = np.arccos(Verifier(session).policy.threshold_for(1.6) - Verifier.SPLIT_NEAR)
            named["edge"] = _unit(np.cos(theta + beta - 2e-3) * c +
                                  np.sin(theta + beta - 2e-3) * u)
        v = Verifier(session, _gallery(session, 400, trial, **named))
        assert len(v.voiceprints) >= Verifier.MATRIX_MIN_VOICES
        worth, pooled = v._split_sims(windows)
        matrix = v._gallery("wide", v.voiceprints)[1]
        brute = v._worth(windows @ matrix.T, v.policy.threshold_for(1.6))
        assert worth == brute, trial
        c = windows.sum(axis=0, dtype=np.float64)
        np.testing.assert_allclose(pooled, matrix @ (c / np.linalg.norm(c)), atol=1e-5)
        checked[brute] += 1
    assert checked[True] >= 5 and checked[False] >= 5, checked  # both answers were exercised


def test_split_turns_in_a_large_gallery_are_scored_like_in_a_small_one(session, alice_print,
                                                                       demo, conversation):
    """The turns of a split segment are scored in one pass over a large gallery: each turn's
    decision and its score for alice equal the one-voice run's."""
    from test_rooms_turns import back_to_back, turn

    x, _ = back_to_back(turn(demo, conversation, 0), turn(demo, conversation, 1)[:3 * SR])
    few = [e for e in Verifier(session, {"alice": alice_print}).process(chunks_of(x, 1600))
           if isinstance(e, DecisionEvent)]
    big = [e for e in Verifier(session, _gallery(session, 3000, 11, alice=alice_print))
           .process(chunks_of(x, 1600)) if isinstance(e, DecisionEvent)]
    assert any(d.end_reason == "speaker_change" for d in big)
    assert [(d.start_s, d.end_s, d.end_reason) for d in big] == \
        [(d.start_s, d.end_s, d.end_reason) for d in few]
    for a, b in zip(few, big):
        assert (a.speaker, a.accepted) == (b.speaker, b.accepted)
        assert len(b.scores) == Verifier.TOP_SCORES
        if "alice" in b.scores:
            assert abs(b.scores["alice"] - a.scores["alice"]) < 1e-4
        else:  # alice fell out of the best ten only if ten strangers beat her
            assert min(b.scores.values()) >= a.scores["alice"] - 1e-4
