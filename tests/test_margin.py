"""``--margin``: every threshold the model calibrated moved together (a voice lock that lets
fewer strangers in, or an assistant that asks its owner again less often), in the policy, the
CLI (listen, verify, eval), the Python API and the Wyoming gate's arguments."""

from __future__ import annotations

import json

import pytest

from rtverify.config import MAX_MARGIN, DecisionConfig, check_margin
from rtverify.core.scoring import DecisionPolicy

from test_cli import CONVERSATION, ENROLL, json_lines, one_line_error, rtv  # noqa: F401
from test_cli import store  # noqa: F401  (the module fixture: alice enrolled)

CFG = DecisionConfig(threshold=0.8, thresholds_by_speech_s=((0.6, 0.76), (5.0, 0.84)),
                     threshold_offsets_by_snr_db=((10.0, 0.03), (30.0, 0.0)),
                     threshold_offsets_by_enrol_s=((3.0, -0.02), (10.0, 0.0)))


def test_the_margin_moves_every_calibrated_threshold_and_nothing_else():
    plain, raised = DecisionPolicy(CFG), DecisionPolicy(CFG, margin=0.03)
    for speech_s, snr in ((0.7, None), (2.0, 12.0), (8.0, 40.0)):
        assert raised.threshold_for(speech_s, snr) == pytest.approx(
            plain.threshold_for(speech_s, snr) + 0.03)
    # the per-voice offsets (enrolled speech) stay as calibrated, on top of the margin
    assert raised.offsets_by_amount({"a": 3.0}) == plain.offsets_by_amount({"a": 3.0}) != {}
    scores = {"alice": 0.85}
    a, b = plain.decide(scores, 5.0, 40.0), raised.decide(scores, 5.0, 40.0)
    assert a.accepted and not b.accepted and b.reason == "below_threshold"
    assert b.threshold == pytest.approx(a.threshold + 0.03)
    assert b.margin == pytest.approx(a.margin - 0.03)
    lower = DecisionPolicy(CFG, margin=-0.05).decide({"alice": 0.80}, 5.0, 40.0)
    assert lower.accepted  # 0.84 - 0.05


@pytest.mark.parametrize("bad", [0.5, -0.21, float("nan"), float("inf"), "0.02", True])
def test_a_margin_out_of_range_or_not_a_number_is_refused(bad):
    with pytest.raises(ValueError, match="margin"):
        check_margin(bad)
    with pytest.raises(ValueError, match="margin"):
        DecisionPolicy(CFG, margin=bad)


def test_a_margin_of_any_real_number_type_is_checked_by_its_value():
    """numpy's float32 (a margin computed from an array) was refused as 'not a number', and an
    int too large for a float (10**400) ended Listener with an OverflowError, not the one
    line; a huge one's message stays one short line."""
    import numpy as np

    assert check_margin(np.float32(0.05)) == pytest.approx(0.05)
    assert check_margin(np.int64(0)) == 0.0 and isinstance(check_margin(np.float32(0.1)), float)
    for huge in (10 ** 400, -(10 ** 400), 10 ** 5000):
        with pytest.raises(ValueError, match="margin") as err:
            check_margin(huge)
        assert len(str(err.value)) < 150


def test_api_listener_refuses_huge_int_margins_and_thresholds_as_its_own_errors(store):
    from rtverify.api import Listener
    from rtverify.errors import RtverifyError

    for kwargs in ({"margin": 10 ** 400}, {"threshold": 10 ** 400}):
        with pytest.raises(RtverifyError):
            Listener(store=store, **kwargs)


def test_a_margin_and_a_threshold_together_are_refused():
    with pytest.raises(ValueError, match="give one"):
        DecisionPolicy(CFG, threshold=0.7, margin=0.01)
    assert check_margin(None) == 0.0 and check_margin(MAX_MARGIN) == MAX_MARGIN


def _decisions(proc):
    assert proc.returncode == 0, proc.stderr
    return [e for e in json_lines(proc) if e["event"] == "decision"]


def test_listen_margin_raises_each_decisions_threshold_and_cuts_the_same_utterances(store):
    """The demo conversation with --margin 0.2: the same utterances (where speech is cut does
    not depend on the margin), each threshold 0.2 higher, and alice, accepted without it, no
    longer accepted; --margin -0.2 gives every utterance 0.2 more. The ready event says it."""
    base = _decisions(rtv("listen", "--input", CONVERSATION, "--json", store=store))
    proc = rtv("listen", "--input", CONVERSATION, "--json", "--margin", "0.2", store=store)
    high = _decisions(proc)
    ready = json_lines(proc)[0]
    assert ready["event"] == "ready" and ready["threshold"].startswith("margin +0.2 on 0.")
    assert [(d["start_s"], d["end_s"]) for d in high] == [(d["start_s"], d["end_s"])
                                                           for d in base]
    assert any(d["accepted"] for d in base) and not any(d["accepted"] for d in high)
    for a, b in zip(base, high):
        assert b["threshold"] == pytest.approx(a["threshold"] + 0.2, abs=2e-4)
    low = _decisions(rtv("listen", "--input", CONVERSATION, "--json", "--margin", "-0.2",
                         store=store))
    assert [d["margin"] for d in low] == pytest.approx([d["margin"] + 0.2 for d in base],
                                                       abs=2e-4)


@pytest.mark.parametrize("args, words", [
    (["--margin", "0.5"], ["--margin", "between -0.2 and 0.2"]),
    (["--margin", "nan"], ["--margin"]),
    (["--margin", "x"], ["--margin"]),
    (["--margin", "0.01", "--threshold", "0.7"], ["--margin", "--threshold"]),
    (["--margin", "0" * 5000 + "1"], ["--margin", "'00000", "...'"]),  # was echoed whole
    (["--threshold", "x" * 5000], ["--threshold", "'xxxxx", "...'"]),
])
@pytest.mark.parametrize("command", ["listen", "verify"])
def test_bad_margins_are_one_line_usage_errors(store, command, args, words):
    extra = ["--name", "alice"] if command == "verify" else []
    proc = rtv(command, *extra, "--input", ENROLL[0], *args, store=store)
    assert proc.returncode == 2
    one_line_error(proc, *words)


def test_verify_margin_turns_an_accept_into_a_reject(store):
    proc = rtv("verify", "--name", "alice", "--input", ENROLL[1], "--json", store=store)
    base = json.loads(proc.stdout)
    assert proc.returncode == 0 and base["accepted"]
    margin = round(base["margin"] + 0.01, 3)  # just past what this recording clears
    proc = rtv("verify", "--name", "alice", "--input", ENROLL[1], "--json", "--margin",
               str(margin), store=store)
    raised = json.loads(proc.stdout)
    assert proc.returncode == 1 and not raised["accepted"]
    assert raised["threshold"] == pytest.approx(base["threshold"] + margin, abs=2e-4)
    assert raised["score"] == base["score"]


def test_api_listener_takes_a_margin_and_checks_it(store):
    from rtverify.api import Listener
    from rtverify.errors import InputError

    plain = Listener(store=store).verify("alice", ENROLL[1])
    raised = Listener(store=store, margin=round(plain.decision.margin + 0.01, 3)).verify(
        "alice", ENROLL[1])
    assert plain.accepted and not raised.accepted
    for bad in ({"margin": 0.3}, {"margin": "0.02"}, {"margin": 0.01, "threshold": 0.7},
                {"margin": 0, "threshold": 0.7}):  # as the CLI and the server: not both given
        with pytest.raises(InputError, match="margin"):
            Listener(store=store, **bad)


def test_eval_margin_reports_the_rates_at_raised_thresholds(store, tmp_path):
    """eval --margin: the same EER, the rates at the model's thresholds raised (a list of the
    demo's takes against alice's and the stranger's lines from the conversation)."""
    import soundfile as sf

    from conftest import DEMO, SR, read16k

    conv = read16k(DEMO / "conversation.flac")
    for i, (a, b) in enumerate(((6.6, 10.4), (12.3, 16.6), (23.0, 27.6))):  # the stranger
        sf.write(tmp_path / f"s{i}.wav", conv[int(a * SR):int(b * SR)], SR)
    for i, (a, b) in enumerate(((1.0, 3.3), (3.4, 5.9), (17.7, 21.3))):  # alice
        sf.write(tmp_path / f"a{i}.wav", conv[int(a * SR):int(b * SR)], SR)
    for i, take in enumerate(ENROLL):
        sf.write(tmp_path / f"e{i}.wav", read16k(take), SR)
    lines = [f"1 e0.wav+e1.wav a{i}.wav" for i in range(3)] + \
        [f"0 e0.wav+e1.wav s{i}.wav" for i in range(3)]
    (tmp_path / "trials.txt").write_text("\n".join(lines) + "\n")
    runs = {}
    for m in ("0", "0.2"):
        proc = rtv("eval", "--trials", tmp_path / "trials.txt", "--root", tmp_path, "--json",
                   "--margin", m, store=store)
        assert proc.returncode == 0, proc.stderr
        runs[m] = json.loads(proc.stdout)
    assert runs["0"]["frr_at_model_threshold"] == 0 and runs["0.2"]["frr_at_model_threshold"] == 1
    assert runs["0"]["accuracy_at_model_threshold"] == 1
    assert runs["0.2"]["accuracy_at_model_threshold"] == 0.5
    assert runs["0.2"]["eer"] == runs["0"]["eer"] and runs["0.2"]["margin"] == 0.2
    proc = rtv("eval", "--trials", tmp_path / "trials.txt", "--root", tmp_path, "--margin", "1",
               store=store)
    assert proc.returncode == 2
    one_line_error(proc, "--margin")


@pytest.mark.parametrize("args, words", [(["--margin", "0.5"], ["--margin", "between"]),
                                         (["--margin", "0.01", "--threshold", "0.7"],
                                          ["--threshold and --margin"])])
def test_wyoming_gate_checks_its_margin_before_it_starts(store, args, words):
    proc = rtv("wyoming", "--stt-uri", "tcp://127.0.0.1:9", *args, store=store, timeout=60)
    assert proc.returncode == 2
    one_line_error(proc, *words)
