"""The benchmark's model variants load and decide: ``python -m benchmarks run`` measures the
shipped default at the other hop, which its short expert cannot read."""

from __future__ import annotations

import json

from rtverify.core.encoder import EncoderSession, sidecar_path


def test_a_hop_variant_of_the_default_loads_without_its_short_expert(tmp_path):
    from benchmarks.variants import default_variants, make_variant

    names = [v for v in default_variants() if v.startswith("hop")]
    assert names, "the default's variants include the other hop"
    path = make_variant(names[0], tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    assert side["window"]["hop_frames"] == int(names[0][3:])
    assert "short_expert" not in side
    s = EncoderSession(path)
    assert s.short_expert is None and s.expert_decides(0.3, None) is False
    assert EncoderSession().short_expert is not None  # the shipped one keeps it


def test_extra_trials_lists_are_named_by_their_file_and_bad_ones_refused(tmp_path, capsys):
    import pytest

    from benchmarks.__main__ import main
    from benchmarks.accuracy import parse_list

    trials = tmp_path / "sc-1s-vp3.txt"
    trials.write_text("1 a/x.wav b/y.wav\n")
    assert parse_list(f"{trials}={tmp_path}") == ("sc-1s-vp3", trials, tmp_path)
    for spec, says in ((str(trials), "expected TRIALS=ROOT"),
                       (f"{tmp_path / 'none.txt'}={tmp_path}", "trials list not found"),
                       (f"{trials}={tmp_path / 'nowhere'}", "audio folder not found")):
        with pytest.raises(SystemExit) as e:
            main(["run", "--skip-speed", "--list", spec])
        assert e.value.code == 2 and says in capsys.readouterr().err
