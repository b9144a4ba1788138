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


def _fake_commands(root, counts):
    rows = ["speaker\tpath\tduration_s\tsample_rate"]
    for spk, n in counts.items():
        (root / spk).mkdir(parents=True)
        for i in range(n):
            (root / spk / f"word{i}_0.wav").write_bytes(b"")
            rows.append(f"{spk}\t{spk}/word{i}_0.wav\t1.0\t16000")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")


def test_extra_corpus_split_holds_every_third_speaker_out(tmp_path):
    from training.data import extra_split

    _fake_commands(tmp_path, {f"{k:08x}": 2 for k in range(7)})
    split = extra_split(tmp_path)
    assert split["held"] == ["00000002", "00000005"]
    assert set(split["train"]) | set(split["held"]) == {f"{k:08x}" for k in range(7)}
    assert not set(split["train"]) & set(split["held"])


def test_speech_commands_lists_use_only_held_out_speakers(tmp_path):
    from tools.sc_trials import build

    # held out: 00000002 (5 clips), 00000005 (6 clips), 00000008 (3 clips: too few for a
    # voiceprint and a probe); the others are training speakers and must not appear
    _fake_commands(tmp_path / "sc", {f"{k:08x}": n for k, n in
                                     enumerate([5, 5, 5, 5, 5, 6, 5, 5, 3])})
    paths = build(tmp_path / "sc", tmp_path / "out", different=8)
    vp = [ln.split() for ln in paths["sc-1s-vp3"].read_text().splitlines()]
    same = [ln for ln in vp if ln[0] == "1"]
    assert len(same) == 2 + 3 and len(vp) - len(same) == 8
    for label, prints, probe in vp:
        takes = prints.split("+")
        assert len(takes) == 3 and probe not in takes
        owner = {t.split("/")[0] for t in takes}
        assert owner <= {"00000002", "00000005"} and len(owner) == 1
        assert probe.split("/")[0] in {"00000002", "00000005"}
        assert (probe.split("/")[0] in owner) == (label == "1")
    pairs = [ln.split() for ln in paths["sc-1s"].read_text().splitlines()]
    assert sum(ln[0] == "1" for ln in pairs) == 10 + 15
    assert len(pairs) == 25 + 25  # as many different pairs as same (30 exist)
    # asking for more different pairs than exist takes them all instead of looping for ever
    paths = build(tmp_path / "sc", tmp_path / "out2", different=100)
    vp = paths["sc-1s-vp3"].read_text().splitlines()
    assert sum(ln.startswith("0") for ln in vp) == 6 + 5  # each voiceprint x the other's clips
    assert all((a.split("/")[0] == b.split("/")[0]) == (lab == "1") for lab, a, b in pairs)


def test_speech_commands_layout_groups_clips_by_speaker(tmp_path):
    import soundfile as sf

    from tools.sc_trials import layout, main

    src = tmp_path / "src"
    clips = {"yes/0a1b2c3d_nohash_0.wav": 1.0, "yes/0a1b2c3d_nohash_1.wav": 1.0,
             "no/0a1b2c3d_nohash_0.wav": 0.5, "no/ffff0000_nohash_2.wav": 1.0,
             "_unknown_/five_ffff0000_nohash_4.wav.wav": 1.0,
             "_silence_/1024.wav": 1.0, "yes/notes.wav": 1.0}
    for name, secs in clips.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(src / name, np.zeros(int(16000 * secs), np.float32), 16000)
    corpus = tmp_path / "corpus"
    assert layout(src, corpus) == 5
    rows = [r.split("\t") for r in (corpus / "MANIFEST.tsv").read_text().splitlines()[1:]]
    assert sorted((r[0], r[1]) for r in rows) == [
        ("0a1b2c3d", "0a1b2c3d/no_0.wav"), ("0a1b2c3d", "0a1b2c3d/yes_0.wav"),
        ("0a1b2c3d", "0a1b2c3d/yes_1.wav"), ("ffff0000", "ffff0000/five_4.wav"),
        ("ffff0000", "ffff0000/no_2.wav")]
    assert {r[1]: r[2] for r in rows}["0a1b2c3d/no_0.wav"] == "0.500"
    with pytest.raises(SystemExit, match="already laid out"):
        main(["--layout", str(src), "--corpus", str(corpus), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no Speech Commands clips"):
        layout(tmp_path / "corpus" / "0a1b2c3d", tmp_path / "empty")


def test_one_threshold_fitted_on_one_list_is_applied_to_every_list():
    from tools.norm_domains import rates_at_one_threshold

    # fit: 200 different-speaker scores 0.00 .. 0.995; at 1 % the threshold (0.985) lets two
    # of them through
    fit = np.r_[np.arange(200) / 200, [0.99, 0.2, 0.995]]
    fit_labels = np.r_[np.zeros(200, bool), [True, True, True]]
    other = np.r_[[0.999, 0.5, -np.inf, 0.1], [0.999, 0.98]]
    other_labels = np.r_[np.zeros(4, bool), [True, True]]
    got = rates_at_one_threshold({"fit": fit, "other": other},
                                 {"fit": fit_labels, "other": other_labels}, "fit", 0.01)
    assert got["fit"] == (pytest.approx(2 / 200), pytest.approx(1 / 3))  # 0.2 is refused
    # the same threshold elsewhere; the trial without a finite score is left out
    assert got["other"] == (pytest.approx(1 / 3), pytest.approx(1 / 2))


def test_norm_domains_refuses_a_folder_that_is_not_the_shared_data(tmp_path):
    from tools.norm_domains import main

    (tmp_path / "t.txt").write_text("1 a.wav b.wav\n")
    with pytest.raises(SystemExit, match="not the shared data folder"):
        main(["--speech-commands", str(tmp_path), "--data", str(tmp_path),
              "--fit", f"{tmp_path / 't.txt'}={tmp_path}"])
