"""``rtverify.api``: the pipeline in a Python program. The same decisions as ``rtverify listen``
on the same recording, whatever the block size, sample type and rate a caller feeds; ``verify``
as the CLI's; a caller's mistakes are one-line errors of rtverify's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from conftest import DEMO
from test_cli import err, out, rtv
from rtverify.api import Listener
from rtverify.errors import InputError, NotEnoughSpeech, RtverifyError, StoreError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-store")
    proc = rtv("enroll", "--name", "alice", "--input", DEMO / "enroll_1.flac",
               DEMO / "enroll_2.flac", store=root)
    assert proc.returncode == 0, err(proc)
    return root


@pytest.fixture(scope="module")
def cli_decisions(store):
    proc = rtv("listen", "--input", DEMO / "conversation.flac", "--json", "--name", "alice",
               store=store)
    assert proc.returncode == 0, err(proc)
    lines = [json.loads(line) for line in out(proc).splitlines()]
    return [d for d in lines if d["event"] == "decision"]


def heard(listener, x, block):
    events = []
    for i in range(0, len(x), block):
        events += listener.feed(x[i:i + block])
    return events + listener.finish()


def decisions(events):
    return [e.to_dict() for e in events if e.kind == "decision"]


def test_listener_decides_as_listen_does_whatever_the_blocks(store, cli_decisions, demo):
    x16, rate = sf.read(DEMO / demo["conversation"], dtype="int16")
    assert rate == 16000
    script = [(s["start_s"], s["end_s"], s["speaker"] == demo["enrolled_speaker"])
              for s in demo["script"]]
    with Listener(names=["alice"], store=store) as lis:
        assert lis.voices == ["alice"]
        for block, samples in ((160, x16), (4096, x16), (1234, x16.astype(np.float32) / 32768)):
            got = decisions(heard(lis, samples, block))
            assert len(got) == len(cli_decisions) >= len(script), block
            for d, c in zip(got, cli_decisions):
                assert abs(d["score"] - c["score"]) < 1e-3, (block, d, c)
                assert abs(d["start_s"] - c["start_s"]) < 0.05  # times from the stream's start
                # the script's turn it overlaps most says who spoke
                is_alice = max(script, key=lambda t: min(t[1], d["end_s"]) -
                               max(t[0], d["start_s"]))[2]
                assert d["accepted"] == c["accepted"] == is_alice, (block, d)
                assert d["speaker"] == ("alice" if is_alice else None)
            assert {t[2] for t in script} == {True, False}


def test_listener_at_another_rate_and_in_stereo(store, demo):
    x, _ = sf.read(DEMO / demo["conversation"], dtype="float32")
    x48 = resample_poly(x, 3, 1).astype(np.float32)
    stereo = np.stack([x48, x48], axis=1)
    with Listener(store=store, rate_hz=48000) as lis:  # every voice: alice alone here
        got = decisions(heard(lis, stereo, 4800))
    assert len(got) >= len(demo["script"])
    for d in got:
        turn = max(demo["script"], key=lambda t: min(t["end_s"], d["end_s"]) -
                   max(t["start_s"], d["start_s"]))
        assert d["accepted"] == (turn["speaker"] == demo["enrolled_speaker"]), d


def test_verify_a_path_and_an_array_alike(store, demo, tmp_path):
    with Listener(names=["alice"], store=store) as lis:
        by_path = lis.verify("alice", DEMO / "enroll_2.flac")
        x, rate = sf.read(DEMO / "enroll_2.flac", dtype="int16")
        by_array = lis.verify("alice", x, rate)
        assert by_path.accepted and by_array.accepted
        assert abs(by_path.decision.score - by_array.decision.score) < 1e-4
        proc = rtv("verify", "--name", "alice", "--input", DEMO / "enroll_2.flac", "--json",
                   store=store)
        assert abs(json.loads(out(proc))["score"] - by_path.decision.score) < 1e-3
        # a stranger's turn from the conversation is refused
        conv, _ = sf.read(DEMO / demo["conversation"], dtype="float32")
        turn = next(s for s in demo["script"] if s["speaker"] != demo["enrolled_speaker"])
        stranger = conv[int(turn["start_s"] * 16000):int(turn["end_s"] * 16000)]
        assert not lis.verify("alice", stranger).accepted
        with pytest.raises(NotEnoughSpeech, match="of speech"):
            lis.verify("alice", np.zeros(16000, np.float32))


def test_a_callers_mistakes_are_one_line_errors(store, tmp_path):
    def one_line(exc_info, *words):
        text = str(exc_info.value)
        assert "\n" not in text, text
        for w in words:
            assert w in text, (w, text)

    with pytest.raises(StoreError) as e:
        Listener(names=["bob"], store=store)
    one_line(e, "'bob'", "not enrolled")
    with pytest.raises(StoreError) as e:
        Listener(store=tmp_path / "empty")
    one_line(e, "no usable voice", "enroll")
    with pytest.raises(InputError) as e:
        Listener(names=[], store=store)
    one_line(e, "at least one voice")
    for rate in (0, 7999.5, 10**7):
        with pytest.raises(InputError) as e:
            Listener(store=store, rate_hz=rate)
        one_line(e, "sample rate")
    with pytest.raises(InputError) as e:
        Listener(store=store, threshold=3)
    one_line(e, "between -1 and 1")
    with Listener(store=store) as lis:
        bad = [(np.array(["a", "b"]), "type <U1"), (np.zeros((4, 3, 2), np.float32), "shape"),
               (np.zeros((10, 100), np.float32), "64 channels"),
               (np.array([0.0, np.nan], np.float32), "NaN"),
               (np.array([0.0, np.inf]), "infinite"),
               (np.array([0.0, 1e300]), "far over full scale")]
        for samples, word in bad:
            with pytest.raises(InputError) as e:
                lis.feed(samples)
            one_line(e, word)
        assert lis.feed(np.zeros(0, np.int16)) == []
        with pytest.raises(RtverifyError) as e:
            lis.verify("alice", tmp_path / "missing.wav")
        one_line(e, "missing.wav")


def test_enroll_from_arrays_and_paths_as_the_cli_does(store, demo, tmp_path):
    """Listener.enroll: arrays (any rate) or paths, the CLI's checks and one-line errors,
    nothing written on a refusal; the voice it writes is the one `enroll --input` writes."""
    own = tmp_path / "own"
    proc = rtv("enroll", "--name", "cli", "--input", DEMO / "enroll_1.flac",
               DEMO / "enroll_2.flac", store=own)
    assert proc.returncode == 0, err(proc)
    takes = [sf.read(DEMO / f, dtype="float32")[0] for f in demo["enroll"]]
    conv, _ = sf.read(DEMO / demo["conversation"], dtype="float32")
    turn = next(s for s in demo["script"] if s["speaker"] != demo["enrolled_speaker"])
    stranger = conv[int(turn["start_s"] * 16000):int(turn["end_s"] * 16000)]
    with Listener(names=["cli"], store=own) as lis:
        vp = lis.enroll("bob", [resample_poly(t, 1, 2).astype(np.float32) for t in takes], 8000)
        assert vp.n_takes == 2 and vp.speech_s > 5
        vp48 = lis.enroll("carol", [resample_poly(t, 3, 1).astype(np.float32) for t in takes],
                          48000)
        by_cli = lis.store.load("cli")
        assert float(np.dot(vp48.embedding, by_cli.embedding)) > 0.99
        assert set(vp48.models or {}) == set(by_cli.models or {})  # every shipped model's
        assert lis.verify("carol", DEMO / "enroll_2.flac").accepted
        before = {p.name: p.read_bytes() for p in own.iterdir()}
        with pytest.raises(StoreError, match="'bob' is already enrolled"):
            lis.enroll("bob", takes, 16000)
        with pytest.raises(InputError) as e:
            lis.enroll("dave", [takes[0], stranger], 16000)
        assert "recording 2" in str(e.value) and "rtverify-enroll-" not in str(e.value)
        with pytest.raises(InputError, match="^recording 2: the same recording as recording 1;"):
            lis.enroll("dave", [takes[0], takes[0]], 16000)  # (once counted as two takes)
        with pytest.raises(InputError, match="recording 1: does not sound like 'bob'.*add it with vouch=True"):
            lis.enroll("bob", [stranger], 16000, add=True)
        with pytest.raises(InputError, match="vouch goes with add"):
            lis.enroll("bob", [stranger], 16000, vouch=True)
        with pytest.raises(InputError, match="NaN"):
            lis.enroll("erin", [np.full(16000, np.nan, np.float32)], 16000)
        with pytest.raises(RtverifyError, match="missing.wav"):
            lis.enroll("erin", [tmp_path / "missing.wav"])
        assert {p.name: p.read_bytes() for p in own.iterdir()} == before
        added = lis.enroll("bob", [stranger], 16000, add=True, vouch=True)
        assert added.n_takes == 3
        assert lis.voices == ["cli"]  # the listener's voices are those it was made with


def test_a_name_a_path_and_a_rate_given_as_a_python_caller_would(store, demo, tmp_path):
    """What a Python caller plausibly writes: names="alice" (one name, not the voices 'a', 'l',
    ...), enroll(name, "take.wav") (one path, not its characters), big-endian int16 (int16
    still), a rate as text or None (a one-line InputError, not numpy's TypeError)."""
    with Listener(names="alice", store=store) as lis:
        assert lis.voices == ["alice"]
        x16, _ = sf.read(DEMO / demo["conversation"], dtype="int16")
        little = decisions(heard(lis, x16, 4096))
        big = decisions(heard(lis, x16.astype(">i2"), 4096))
        assert little and [d["score"] for d in big] == [d["score"] for d in little]
        for rate in ("16000", [16000]):  # (None: the listener's rate)
            with pytest.raises(InputError, match="sample rate .* not a number"):
                lis.verify("alice", x16, rate)
        with pytest.raises(InputError, match="not one array"):
            lis.enroll("erin", np.zeros(48000, np.float32))
        for recordings in (5, None):  # TypeError: 'int' object is not iterable, before
            with pytest.raises(InputError, match="recordings .*: give a list of recordings"):
                lis.enroll("erin", recordings)
        for flag in ("force", "add", "vouch"):  # force="no" was true: alice replaced
            with pytest.raises(InputError, match=f"{flag}='no': give True or False"):
                lis.enroll("alice", str(DEMO / "enroll_1.flac"), **{flag: "no"})
        assert lis.store.load("alice").n_takes == 2  # as the fixture enrolled her
        vp = lis.enroll("erin", str(DEMO / "enroll_1.flac"))  # 3.5 s of speech: one take
        assert vp.n_takes == 1 and (store / "erin.json").exists()
        assert lis.store.load("erin").n_takes == 1
        lis.store.remove("erin")
    for rate in ("16000", None):
        with pytest.raises(InputError, match="sample rate"):
            Listener(store=store, rate_hz=rate)
    # arguments of the wrong type: Python's TypeErrors before ("voice name 97" for b"alice")
    for kwargs, words in (({"names": 5}, "names 5: give a voice name"),
                          ({"names": b"alice"}, "voice name b'alice': must be text"),
                          ({"store": 123}, "store 123: give a path"),
                          ({"model": 3}, "model 3: give a path or a name"),
                          ({"model": b"campp"}, "model b'campp'")):
        with pytest.raises(InputError, match=words):
            Listener(**({"store": store} | kwargs))
    with Listener(store=store) as lis:  # checked before a device is opened
        for retries in ("3", -1, 1.5, True):  # "3" was a TypeError at the first outage
            with pytest.raises(InputError, match="retries .*whole number of attempts"):
                lis.microphone(retries=retries)
    # an int too big for a float, or not finite: numpy's TypeError from isfinite before
    for rate in (10**400, -10**400, float("inf"), float("nan")):
        with pytest.raises(InputError, match="sample rate .* not supported"):
            Listener(store=store, rate_hz=rate)


def test_threads_out_of_range_are_one_line_errors(store):
    """threads=10**6 had onnxruntime start a million threads (eval's --threads 1000000: 24 GB
    resident, killed after 7 minutes); -1 and 0 were quietly 1, "2" and 2.5 quietly 2. Each is
    refused before a session is made (65: one over the limit, harmless on the code before)."""
    for threads in (65, 0, -1, 2.5, "2", True):
        with pytest.raises(InputError, match="threads .*from 1 to 64"):
            Listener(store=store, threads=threads)
    assert Listener(store=store, threads=np.int64(2)).session.threads == 2


def test_a_long_block_is_taken_a_slice_at_a_time(store, demo):
    """Ten minutes of 48 kHz stereo int16 in one feed() or verify() had been converted whole:
    858 MiB more at the peak for 110 MiB of input. Two minutes here (22 MiB): the memory Python
    allocates meanwhile stays under the input's size, the decisions are those of 1 s blocks, and
    a NaN deep in the block still refuses all of it (the stream untouched), saying where."""
    import tracemalloc

    x, _ = sf.read(DEMO / demo["conversation"], dtype="float32")
    x48 = (resample_poly(x, 3, 1) * 32767).astype(np.int16)
    mono = np.tile(x48, int(120 * 48000 / len(x48)) + 1)[:120 * 48000]
    block = np.stack([mono, mono], axis=1)
    def said(events):
        return [(d["start_s"], d["score"], d["accepted"]) for d in decisions(events)]

    with Listener(names="alice", store=store, rate_hz=48000) as lis:
        by_second = said(heard(lis, block, 48000))
        tracemalloc.start()
        try:
            whole = said(lis.feed(block) + lis.finish())
            score = lis.verify("alice", block).decision.score
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < block.nbytes, (peak / 2**20, block.nbytes / 2**20)
        assert whole == by_second and len(whole) > 20
        assert 0 < score < 1
        bad = block[:5 * 48000].astype(np.float32) / 32768
        bad[int(3.5 * 48000)] = np.nan
        with pytest.raises(InputError, match=r"NaN sample values \(around 3\.00 s\)"):
            lis.feed(bad)
        assert said(heard(lis, block, 48000)) == by_second  # from 0 s, as before
