"""The tools that write trial lists for issue 11's conditions: EmoDB's all-pairs list and the
3-take voiceprint lists, read back by ``rtverify eval``'s own reader."""

import numpy as np
import pytest

from rtverify import evaluation as ev


def test_emodb_all_pairs_list_labels_by_speaker(tmp_path):
    from tools.emodb_trials import main

    wav = tmp_path / "wav"
    wav.mkdir()
    names = ["03a01Fa.wav", "03a02Wb.wav", "08b01Nc.wav", "08a05Ta.wav", "16b10Lb.wav"]
    for n in names + ["notes.wav", "03a01Fa.flac"]:  # neither is an EmoDB recording name
        (wav / n).write_bytes(b"")
    out = tmp_path / "emodb.txt"
    assert main(["--wav", str(wav), "--out", str(out)]) == 0
    t = ev.read_trials(out, wav)
    assert len(t.labels) == 10 and sorted(t.files) == sorted(names)
    same = {tuple(sorted((t.files[a], t.files[b]))) for a, b, lab in zip(t.a, t.b, t.labels)
            if lab == 1}
    assert same == {("03a01Fa.wav", "03a02Wb.wav"), ("08a05Ta.wav", "08b01Nc.wav")}


def test_emodb_list_refuses_a_folder_without_recordings(tmp_path):
    from tools.emodb_trials import main

    with pytest.raises(SystemExit, match="no EmoDB-named"):
        main(["--wav", str(tmp_path), "--out", str(tmp_path / "x.txt")])


def test_voiceprint_lists_hold_three_clean_takes_and_foreign_probes(tmp_path):
    from training.dev_lists import _write_voiceprint_pairs

    probes = {s: [f"{s}/{s}_{i}.flac" for i in range(n)] for s, n in
              (("1", 6), ("2", 4), ("3", 3), ("4", 6))}
    path = _write_voiceprint_pairs(tmp_path / "babble5-vp3.txt", probes, list(probes), "babble5",
                                   np.random.default_rng(0), n_different=40)
    lines = [ln.split() for ln in path.read_text().splitlines()]
    same = [ln for ln in lines if ln[0] == "1"]
    # speaker 1 and 4: two voiceprints, each against the 3 probes it does not hold; speaker 2:
    # one voiceprint against its 4th probe; speaker 3 (3 probes): nothing left to probe
    assert len(same) == 3 + 3 + 1 + 3 + 3
    assert len(lines) - len(same) == 40
    for label, vp, probe in lines:
        takes = vp.split("+")
        assert len(takes) == 3 and all(t.startswith("clean/") for t in takes)
        assert probe.startswith("babble5/")
        owner = takes[0].split("/")[1]
        assert all(t.split("/")[1] == owner for t in takes)
        assert (probe.split("/")[1] == owner) == (label == "1")
        assert probe.split("/", 1)[1] not in [t.split("/", 1)[1] for t in takes]
