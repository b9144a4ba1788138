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
