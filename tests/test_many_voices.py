"""listen/serve with a large gallery: the Verifier scores many voices as one matrix product and
decides as it does with a few (issue 14, part 3)."""

import numpy as np

from conftest import chunks_of
from rtverify.core.pipeline import Verifier
from rtverify.events import DecisionEvent


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
