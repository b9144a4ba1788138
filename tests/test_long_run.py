"""The long run in small: three minutes of the bundled demo speech, with pauses, through
``listen --input FILE --json`` (``benchmarks/long_run.py`` does the hour): memory stays flat after
the first minute, every utterance gets a decision, every speech_start is closed."""

import pytest

from benchmarks.long_run import GROWTH_TARGET_MB, analyse, build, demo_units, enroll_demo_voice, \
    run_listen

pytestmark = pytest.mark.slow


def test_three_minutes_flat_memory_and_a_decision_for_every_utterance(tmp_path):
    meta = build(demo_units(), 3.0, tmp_path / "long.wav")
    assert meta["duration_s"] >= 180 and len(meta["units"]) >= 20
    enroll_demo_voice(tmp_path / "voices")
    run = run_listen(tmp_path / "long.wav", tmp_path / "voices", every_s=0.01, timeout_s=300)
    fig = analyse(run, meta)
    print(fig)
    assert run["returncode"] == 0, run["stderr"]
    assert fig["units_with_a_decision"] == fig["units"], fig["missed_units"]
    assert fig["speech_starts_without_decision"] == 0 and fig["decisions_in_pauses"] == 0
    assert fig["summary"]["decisions"] == fig["decisions"] >= fig["units"]
    assert abs(fig["summary"]["stream_s"] - meta["duration_s"]) < 0.1
    assert fig["rss_samples"] >= 10 and fig["rss_at_settle_mb"] is not None
    assert fig["rss_growth_after_settle_mb"] < GROWTH_TARGET_MB
    # the enrolled voice (the demo's speaker 198 in four of the seven pieces) is accepted and no
    # one else is. Strangers: never. Her: the thresholds sit at the calibrated equal-error point
    # for each length (about 7 % misses at 1.4-2 s of speech), and her shortest pieces (1.7 s)
    # score near it, so a few of her short utterances may be missed: at most 1 in 10.
    false_accepts, misses, hers_total = [], [], 0
    for d in (e for e in run["events"] if e["event"] == "decision"):
        unit = next(u for u in meta["units"] if d["start_s"] < u["end_s"] + 0.5 and
                    d["end_s"] > u["start_s"] - 0.5)
        hers = " 198 " in unit["name"] or unit["name"].startswith("enroll")
        hers_total += hers
        if d["accepted"] and not hers:
            false_accepts.append((unit["name"], d["score"], d["speech_s"]))
        elif hers and not d["accepted"]:
            misses.append((unit["name"], d["score"], d["speech_s"], d["threshold"]))
    assert not false_accepts, false_accepts
    assert hers_total >= 10 and len(misses) <= hers_total // 10, (hers_total, misses)
