"""tools.add_takes: the lists that measure `enroll --add` keep the same trials in all three."""

from tools.add_takes import build, clean_probe

LINES = """1 clean/7/7_3.flac+clean/7/7_4.flac+clean/7/7_5.flac reverb/7/7_0.flac
1 clean/7/7_3.flac+clean/7/7_4.flac+clean/7/7_5.flac reverb/7/7_2.flac
1 clean/7/7_0.flac+clean/7/7_1.flac+clean/7/7_2.flac reverb/7/7_4.flac
1 clean/7/7_0.flac+clean/7/7_1.flac+clean/7/7_2.flac reverb/7/7_5.flac
0 clean/7/7_3.flac+clean/7/7_4.flac+clean/7/7_5.flac reverb/9/9_1.flac
1 clean/8/8_0.flac+clean/8/8_1.flac+clean/8/8_2.flac reverb/8/8_3.flac
""".splitlines()


def test_the_added_take_is_never_the_probe_and_the_trials_match():
    base, add, clean4 = build(LINES, "reverb")
    # the first of the speaker's probes outside a voiceprint is added to it (7's 3-5 gets 0, its
    # 0-2 gets 4, 8's 0-2 gets 3), and a true trial whose probe it is leaves all three lists
    assert [ln.split()[2] for ln in base] == ["reverb/7/7_2.flac", "reverb/7/7_5.flac",
                                              "reverb/9/9_1.flac"]
    assert [ln.split()[1].rsplit("+", 1)[1] for ln in add] == [
        "reverb/7/7_0.flac", "reverb/7/7_4.flac", "reverb/7/7_0.flac"]
    assert [ln.split()[1].rsplit("+", 1)[1] for ln in clean4] == [
        "clean/7/7_0.flac", "clean/7/7_4.flac", "clean/7/7_0.flac"]
    for a, b in zip(base, add):
        assert a.split()[0] == b.split()[0] and a.split()[2] == b.split()[2]
        assert b.split()[1].startswith(a.split()[1] + "+")
    assert [ln.split()[0] for ln in base] == ["1", "1", "0"]
    assert clean_probe(add[0]).split()[2] == "clean/7/7_2.flac"
