"""Short segments embedded as the mean of several padded views; DC offsets ignored by the gate."""

import dataclasses

import numpy as np
import pytest

from rtverify.config import SegmenterConfig, WindowConfig
from rtverify.core.encoder import SegmentEmbedder, l2_normalize, short_view_inputs
from rtverify.core.features import mel_spectrogram

from conftest import DEMO, read16k, run_segmenter

SR = 16000


def test_view_inputs_by_hand():
    rows = np.arange(6, dtype=np.float32).reshape(3, 2) + 1  # rows [1,2] [3,4] [5,6]
    end, start, none, refl = short_view_inputs(rows, 8, ("end", "start", "none", "reflect"))
    assert end.shape == start.shape == refl.shape == (8, 2)
    np.testing.assert_array_equal(end[:3], rows)
    assert not end[3:].any()
    np.testing.assert_array_equal(start[-3:], rows)
    assert not start[:5].any()
    np.testing.assert_array_equal(none, rows)
    # rows, rows reversed, rows, ... cut at 8
    np.testing.assert_array_equal(refl[:, 0], [1, 3, 5, 5, 3, 1, 1, 3])


def test_window_config_reads_old_sidecars_and_refuses_bad_views():
    assert WindowConfig.from_dict({"pad_short": True}).short_views == ("end",)
    assert WindowConfig.from_dict({"pad_short": False}).short_views == ("none",)
    assert WindowConfig.from_dict({"short_views": ["end", "start"]}).short_views == ("end", "start")
    for bad in ((), ("end", "end"), ("middle",)):
        with pytest.raises(ValueError, match="short_views"):
            WindowConfig(short_views=bad)


@pytest.fixture(scope="module")
def short_rows(session):
    x = read16k(DEMO / "enroll_1.flac")
    mel = mel_spectrogram(x, session.features)
    return mel[100:170]  # 0.7 s of speech, shorter than a window


@pytest.mark.parametrize("views", [("end",), ("end", "start", "reflect"), ("none", "start")])
def test_short_segment_is_the_mean_of_its_views(session, short_rows, views):
    s = dataclasses.replace(session.info, window=dataclasses.replace(session.info.window,
                                                                     short_views=views))
    old = session.info
    try:
        session.info = s
        emb = SegmentEmbedder(session)
        emb.push_rows(short_rows)
        seg = emb.finish()
    finally:
        session.info = old
    w = session.window.window_frames
    inputs = short_view_inputs(short_rows, w, views)
    if len({len(v) for v in inputs}) == 1:  # same length: the embedder runs them as one batch
        expected = session.embed(np.stack(inputs)).mean(axis=0)
        assert seg.n_windows == 1
        np.testing.assert_allclose(seg.window_sum, expected, atol=1e-5)
        np.testing.assert_allclose(seg.vector, l2_normalize(expected), atol=1e-5)
    # one at a time: equal up to the int8 model's per-batch activation scaling
    alone = l2_normalize(np.mean([session.embed(v[None])[0] for v in inputs], axis=0))
    assert float(alone @ seg.vector) > 0.999


def test_views_change_the_embedding_of_short_speech_only(session, short_rows):
    """Views apply to segments shorter than a window; longer segments are embedded as before."""
    x = read16k(DEMO / "enroll_1.flac")
    long_rows = mel_spectrogram(x, session.features)[:400]
    out = {}
    old = session.info
    try:
        for views in (("end",), ("end", "start", "reflect")):
            session.info = dataclasses.replace(old, window=dataclasses.replace(
                old.window, short_views=views))
            e = SegmentEmbedder(session)
            e.push_rows(short_rows)
            short = e.finish().vector
            e.push_rows(long_rows)
            out[views] = (short, e.finish().vector)
    finally:
        session.info = old
    (s1, l1), (s3, l3) = out.values()
    assert float(s1 @ s3) < 0.9999  # different views, different short embedding
    np.testing.assert_allclose(l1, l3, atol=1e-6)  # long segment untouched


def segments(x, cfg):
    return [e for e in run_segmenter(x, cfg)[0] if not e.dropped]


def test_dc_offset_does_not_hide_speech():
    speech = read16k(DEMO / "enroll_1.flac")[: 4 * SR]
    shifted = np.clip(speech * 0.3 - 0.25, -1, 1)  # a large DC offset under quieter speech
    assert segments(speech, SegmenterConfig())  # reference: speech is found
    found = segments(shifted, SegmenterConfig())
    assert found and sum(e.speech_s for e in found) > 1.0
    lost = segments(shifted, SegmenterConfig(level_without_dc=False))
    assert sum(e.speech_s for e in lost) < 0.5 * sum(e.speech_s for e in found)
