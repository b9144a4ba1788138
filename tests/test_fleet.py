"""A fleet (issue 14, part 2): two ``rtverify serve`` instances on one PostgreSQL store, as they
would run behind a load balancer. A voice enrolled through one is listed, streamed against and
removed through the other within a second. Real servers: PostgreSQL from ``pg_server``, both
``serve`` processes on loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("websockets")
pytest.importorskip("psycopg")

from pg_server import PgServer  # noqa: E402
from serve_helpers import DEMO, Server  # noqa: E402
from test_serve import stream  # noqa: E402

from rtverify.client import Client, ServerError  # noqa: E402
from rtverify.io.sources import FileSource  # noqa: E402


@pytest.fixture(scope="module")
def fleet():
    pg = PgServer()
    url = pg.new_database()
    a, b = Server(url), Server(url)
    yield a, b
    try:
        assert a.stop() == 0 and b.stop() == 0
    finally:
        pg.stop()


def _within(seconds: float, check) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < seconds, f"not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_voice_enrolled_on_one_instance_is_used_by_the_other(fleet):
    a, b = fleet
    ca, cb = Client(a.url), Client(b.url)
    assert ca.voices() == [] and cb.voices() == []
    made = ca.enroll("alice", [DEMO / "enroll_1.flac", DEMO / "enroll_2.flac"])
    assert made["name"] == "alice" and made["takes"] == 2
    _within(1.0, lambda: [v["name"] for v in cb.voices()] == ["alice"])
    x = np.concatenate([c.samples for c in FileSource(DEMO / "conversation.flac")])
    events = stream(b, x, name="alice")
    decisions = [e for e in events if e["event"] == "decision"]
    assert events[0]["voices"] == ["alice"]
    assert any(d["accepted"] and d["speaker"] == "alice" for d in decisions)
    # the same file verified on either instance gives the same answer
    va, vb = (c.verify("alice", DEMO / "enroll_2.flac") for c in (ca, cb))
    assert va == vb and va["accepted"] is True
    # --force semantics hold across the fleet: b refuses a second enrolment a made
    with pytest.raises(ServerError) as exc:
        cb.enroll("alice", [DEMO / "enroll_1.flac"])
    assert exc.value.code == 409
    assert ca.delete("alice") == {"event": "removed", "name": "alice"}
    _within(1.0, lambda: cb.voices() == [])
    with pytest.raises(ServerError) as exc:
        cb.verify("alice", DEMO / "enroll_2.flac")
    assert exc.value.code == 404
