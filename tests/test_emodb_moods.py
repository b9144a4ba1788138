"""tools.emodb_moods: every voiceprint of a speaker is tried against the same probes, none of
which any of them holds, and each mood's list holds that mood's true trials and every impostor."""

from tools.emodb_moods import EMOTIONS, main


def test_the_voiceprints_share_their_probes_and_hold_none_of_them(tmp_path):
    wav = tmp_path / "wav"
    wav.mkdir()
    names = [f"{spk}a0{i}{emo}a.wav" for spk in ("03", "08") for emo in "NWFTL"
             for i in range(1, 5)]
    names.append("09a01Na.wav")  # a speaker without angry, happy or sad takes: left out
    for n in names:
        (wav / n).touch()
    assert main(["--wav", str(wav), "--out", str(tmp_path / "out")]) == 0
    lists = {}
    for kind in ("neutral3", "neutral3+WF", "neutral3+WFT", "mixed3"):
        lists[kind] = [ln.split() for ln in (tmp_path / "out" / f"{kind}-all.txt").read_text()
                       .splitlines()]
    probes = [{(a[:2], b) for _, a, b in trials} for trials in lists.values()]
    assert all(p == probes[0] for p in probes)  # the same probes for every voiceprint
    for kind, trials in lists.items():
        for label, enrolled, probe in trials:
            takes = enrolled.split("+")
            assert probe not in takes and "09" not in (enrolled[:2], probe[:2])
            assert label == str(int(probe[:2] == takes[0][:2]))
            assert {t[5] for t in takes} == {"neutral3": {"N"}, "neutral3+WF": {"N", "W", "F"},
                                             "neutral3+WFT": {"N", "W", "F", "T"},
                                             "mixed3": {"N", "W", "F"}}[kind]
            held = {t for k in lists for _, a, _ in lists[k] if a[:2] == enrolled[:2]
                    for t in a.split("+")}
            assert probe not in held  # no voiceprint of the speaker holds any probe
    for emo in EMOTIONS:
        trials = [ln.split() for ln in (tmp_path / "out" / f"neutral3-{emo}.txt").read_text()
                  .splitlines() if ln]
        assert all(b[5] == emo for lab, _, b in trials if lab == "1")
        assert sum(lab == "0" for lab, _, _ in trials) == sum(
            t[0] == "0" for t in lists["neutral3"])  # every impostor trial in every mood's list
