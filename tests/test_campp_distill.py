"""Pieces of the distillation: the student read back from the shipped ONNX, and the degradations."""

import json

import numpy as np
import pytest

from training import degrade

RNG = np.random.default_rng


def _speechlike(n=32000, seed=0):
    rng = RNG(seed)
    t = np.arange(n) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.1 * env * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_mix_at_snr_hits_the_snr():
    x = _speechlike()
    noise = RNG(1).standard_normal(5000)
    y = degrade.mix_at_snr(x, noise, 5.0)
    n = y.astype(np.float64) - x
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(n ** 2))
    assert y.shape == x.shape and abs(snr - 5.0) < 0.1


def test_room_response_has_the_asked_direct_to_reverberant_ratio():
    rir = degrade.room_response(RNG(2), 0.6, -3.0)
    drr = 10 * np.log10(rir[0] ** 2 / np.sum(rir[1:] ** 2))
    assert abs(drr + 3.0) < 1e-6 and abs(np.sum(rir ** 2) - 1) < 1e-9
    assert len(rir) == int(0.6 * 16000)


def test_telephone_removes_the_upper_band_and_random_degrade_keeps_length():
    x = RNG(3).standard_normal(16000).astype(np.float32) * 0.1
    spec = np.abs(np.fft.rfft(degrade.telephone(x))) ** 2
    assert spec[5000:].sum() < 1e-3 * spec[:3600].sum()  # bins above ~4.2 kHz
    pool = [_speechlike(seed=s) for s in range(4)]
    for seed in range(20):
        y = degrade.random_degrade(_speechlike(), RNG(seed), pool)
        assert y.shape == (32000,) and y.dtype == np.float32 and np.abs(y).max() <= 1.0


def test_tilt_moves_the_spectral_balance_at_the_same_power_and_is_drawn_only_when_asked():
    x = RNG(5).standard_normal(16000).astype(np.float32) * 0.1

    def high_share(y):
        spec = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
        return spec[len(spec) // 2:].sum() / spec.sum()  # above 4 kHz

    up, down = degrade.tilt(x, 0.7), degrade.tilt(x, -0.5)
    for y in (up, down):
        assert y.dtype == np.float32 and abs(np.mean(y.astype(np.float64) ** 2) /
                                             np.mean(x.astype(np.float64) ** 2) - 1) < 1e-3
    assert abs(high_share(x) - 0.5) < 0.05  # white noise: half its power above 4 kHz
    assert high_share(up) > 0.7 and high_share(down) < 0.3
    # without p_tilt nothing more is drawn: a run without it repeats the earlier draws exactly
    pool = [_speechlike(seed=s) for s in range(4)]
    a = degrade.random_degrade(_speechlike(), RNG(7), pool)
    b = degrade.random_degrade(_speechlike(), RNG(7), pool, p_tilt=0.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, degrade.random_degrade(_speechlike(), RNG(7), pool, p_tilt=1.0))


def _vowel(f0=140.0, n=25600, formants=(700.0, 1200.0)):
    """A voiced, vowel-like sound: a glottal pulse train through two resonances."""
    from scipy.signal import lfilter

    x = np.zeros(n)
    x[(np.arange(0, n / 16000, 1 / f0) * 16000).astype(int)] = 1.0
    for f in formants:
        r = np.exp(-np.pi * 80 / 16000)
        x = lfilter([1.0], [1, -2 * r * np.cos(2 * np.pi * f / 16000), r * r], x)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.train
def test_prosody_moves_the_pitch_keeps_the_formants_and_is_drawn_only_when_asked():
    parselmouth = pytest.importorskip("parselmouth")
    from parselmouth.praat import call

    def pitch_and_f1(y):
        snd = parselmouth.Sound(y.astype(np.float64), 16000)
        return (call(snd.to_pitch(), "Get quantile", 0, 0, 0.5, "Hertz"),
                call(snd.to_formant_burg(), "Get mean", 1, 0, 0, "Hertz"))

    x = _vowel()
    p0, f0 = pitch_and_f1(x)
    up = degrade.prosody(x, RNG(0), semitones=(7, 7), range_factor=(1, 1), duration=(1, 1))
    down = degrade.prosody(x, RNG(0), semitones=(-4, -4), range_factor=(1, 1), duration=(1.2, 1.2))
    for y, semis in ((up, 7), (down, -4)):
        p, f = pitch_and_f1(y)
        assert y.shape == x.shape and y.dtype == np.float32
        assert abs(12 * np.log2(p / p0) - semis) < 0.5  # the pitch moved as asked
        assert abs(f / f0 - 1) < 0.1  # the vocal tract did not
    noise = RNG(1).standard_normal(16000).astype(np.float32) * 0.01  # nothing voiced: unchanged
    np.testing.assert_allclose(degrade.prosody(noise, RNG(0)), noise, atol=1e-7)
    pool = [_speechlike(seed=s) for s in range(4)]
    a = degrade.random_degrade(_speechlike(), RNG(7), pool)
    np.testing.assert_array_equal(a, degrade.random_degrade(_speechlike(), RNG(7), pool,
                                                            p_prosody=0.0))
    assert not np.array_equal(a, degrade.random_degrade(_speechlike(), RNG(7), pool,
                                                        p_prosody=1.0))


@pytest.mark.train
def test_shoebox_rooms_reverberate_as_asked_and_keep_the_speech_in_place():
    pytest.importorskip("pyroomacoustics")
    rng = RNG(4)
    decays = []
    for rt60 in (0.3, 0.8):
        rir = degrade.shoebox_response(rng, rt60_s=(rt60, rt60), distance_m=(2.0, 2.0))
        assert abs(np.sum(rir ** 2) - 1) < 1e-9
        energy = np.cumsum(rir[::-1] ** 2)[::-1]  # Schroeder decay
        decays.append(np.argmax(10 * np.log10(energy / energy[0]) < -20) / 16000)
    assert decays[1] > 1.5 * decays[0]  # a longer RT60 decays slower
    x = _speechlike()
    y = degrade.convolve_room(x, rir)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2) - 1) < 0.05
    click = np.zeros(16000, np.float32)
    click[1000] = 0.5
    # the direct path's delay is taken out: a sound stays where it was
    assert abs(int(np.argmax(np.abs(degrade.convolve_room(click, rir)))) - 1000) <= 20
    pool = [_speechlike(seed=s) for s in range(4)]
    for seed in range(10):
        z = degrade.random_degrade(x, RNG(seed), pool, rooms=[rir])
        assert z.shape == x.shape and np.abs(z).max() <= 1.0


@pytest.mark.train
def test_student_from_onnx_matches_onnxruntime():
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from training.from_onnx import load_shipped_student

    # raises ParityError unless torch and onnxruntime agree to 1e-4 on the demo audio
    model = load_shipped_student(check=True)
    assert model.cfg.hidden == 256 and model.cfg.layers == 3


@pytest.mark.train
def test_campp_export_writes_the_segment_context_the_shipped_model_has():
    """Re-exporting CAM++ must not lose the audio the runtime keeps around its speech."""
    pytest.importorskip("torch")
    import json

    from export.campp_export import SEGMENT_CONTEXT_MS
    from rtverify.core.encoder import MODELS_DIR

    shipped = json.loads((MODELS_DIR / "campp.json").read_text())["segment_context_ms"]
    assert SEGMENT_CONTEXT_MS == shipped


@pytest.mark.train
def test_mask_student_starts_as_the_shipped_encoder_and_trains_only_its_mask(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from conftest import synthetic_teachers

    from training import distill

    base = distill.make_student(0).eval()
    masked = distill.make_student(8, kernel=5).eval()
    rows = torch.from_numpy(RNG(3).random((3, 160, 40), dtype=np.float32) ** 4 * 0.1)
    with torch.no_grad():
        assert torch.equal(base(rows), masked(rows))  # the mask starts at exactly 1
        masked.mask[2].bias.fill_(-1.0)  # and can change what the encoder hears
        assert not torch.allclose(base(rows), masked(rows), atol=1e-3)

    out = tmp_path / "run"
    synthetic_teachers(out)
    distill.train(distill.parse_args(["--out", str(out), "--batch", "2", "--steps", "2",
                                      "--anchor-weight", "1", "--mask", "8",
                                      "--mask-kernel", "5", "--lr", "1e-2"]))
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    init = base.state_dict()
    frozen = [k for k in state["student"] if not k.startswith("mask.")]
    assert frozen and all(torch.equal(state["student"][k], init[k]) for k in frozen)
    assert state["student"]["mask.2.weight"].abs().sum() > 0  # the mask moved
    # and it exports: the ONNX model runs the mask (its sidecar says so)
    args = distill.parse_args(["--out", str(out), "--export", "m", "--export-dir",
                               str(tmp_path / "model")])
    assert distill.export(args) == 0
    side = json.loads((tmp_path / "model" / "m.json").read_text())
    assert side["encoder"]["mask_channels"] == 8 and side["encoder"]["mask_kernel"] == 5


def test_the_campp_head_exports_as_the_embedding(tmp_path):
    """``--export NAME --embedding head``: a 192-d model that computes the student's embedding
    through its CAM++ head, as torch does; the student's own export stays 256-d."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnxruntime as ort
    import torch.nn.functional as F
    from conftest import synthetic_teachers

    from training import distill

    out = tmp_path / "run"
    synthetic_teachers(out)
    distill.train(distill.parse_args(["--out", str(out), "--batch", "2", "--steps", "1"]))
    for emb, dim in (("head", 192), ("student", 256)):
        args = distill.parse_args(["--out", str(out), "--export", emb, "--export-dir",
                                   str(tmp_path / "model"), "--embedding", emb])
        assert distill.export(args) == 0
        side = json.loads((tmp_path / "model" / f"{emb}.json").read_text())
        assert side["embedding_dim"] == dim
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    student = distill.make_student().eval()
    student.load_state_dict(state["student"])
    head = torch.nn.Linear(256, 192)
    head.load_state_dict(state["head"])
    rows = RNG(5).random((2, 160, 40), dtype=np.float32) ** 4 * 0.1
    with torch.no_grad():
        want = F.normalize(head(student(torch.from_numpy(rows))), dim=1).numpy()
    sess = ort.InferenceSession(str(tmp_path / "model" / "head-fp32.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: rows})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.train
def test_soup_averages_the_students_and_refuses_a_different_one(tmp_path):
    torch = pytest.importorskip("torch")
    from training.soup import main

    def ckpt(name, value, keys=("w", "b")):
        path = tmp_path / f"{name}.pt"
        torch.save({"step": 7, "student": {k: torch.full((2,), value) for k in keys},
                    "head": {"h": torch.ones(1)}, "settings": {"lr": "1e-4"}}, path)
        return path

    a, b, c = ckpt("a", 1.0), ckpt("b", 2.0), ckpt("c", 6.0)
    assert main(["--out", str(tmp_path / "soup"), str(a), str(b), str(c)]) == 0
    out = torch.load(tmp_path / "soup" / "last.pt", weights_only=False)
    assert torch.equal(out["student"]["w"], torch.full((2,), 3.0))
    assert out["step"] == 7 and out["settings"]["soup"].count(".pt") == 3
    with pytest.raises(SystemExit, match="not the same student"):
        main(["--out", str(tmp_path / "x"), str(a), str(ckpt("d", 1.0, keys=("w",)))])
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["--out", str(tmp_path / "x"), str(tmp_path / "none.pt")])


@pytest.mark.train
def test_a_crash_while_caching_the_teachers_leaves_no_half_written_cache(tmp_path, monkeypatch):
    """Killed while ``teachers.npz`` is being written (here: the write raises half-way), the next
    run must not find a truncated cache it cannot read: it builds the cache again and trains."""
    pytest.importorskip("torch")
    from conftest import synthetic_teachers

    from training import distill

    synthetic_teachers(tmp_path / "made")
    with np.load(tmp_path / "made" / "teachers.npz") as z:
        made = {k: z[k] for k in z.files}
    monkeypatch.setattr(distill, "collect_windows", lambda root, extra=(): (made["wins"],
                                                                             made["ids"]))
    monkeypatch.setattr(distill, "teacher_embeddings", lambda wins, log: (made["old"],
                                                                           made["campp"]))
    real_savez = np.savez

    def killed_while_writing(file, **arrays):
        real_savez(file, **arrays)
        name = str(file) if str(file).endswith(".npz") else f"{file}.npz"
        with open(name, "r+b") as f:
            f.truncate(1000)  # what a kill -9 in the middle of the write leaves
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed_while_writing)
    out = tmp_path / "run"
    args = ["--out", str(out), "--batch", "2", "--steps", "1"]
    with pytest.raises(KeyboardInterrupt):
        distill.train(distill.parse_args(args))
    monkeypatch.setattr(np, "savez", real_savez)
    assert not (out / "teachers.npz").exists()
    distill.train(distill.parse_args(args))  # starts again cleanly
    assert (out / "last.pt").is_file()


@pytest.mark.train
def test_distill_names_a_foreign_or_unusable_checkpoint_in_one_line(tmp_path, capsys):
    """Resuming from another kind of checkpoint, from a truncated one, or with another student
    (--mask) is a one-line error that leaves last.pt as it was; so is exporting none."""
    torch = pytest.importorskip("torch")
    from conftest import synthetic_teachers

    from training import distill
    from training.train import TrainConfig

    def one_line(rc, *says):
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err, err
        assert all(s in err.strip().splitlines()[-1] for s in says), err

    out = tmp_path / "run"
    synthetic_teachers(out)
    assert distill.main(["--out", str(out), "--batch", "2", "--steps", "1"]) == 0
    good = (out / "last.pt").read_bytes()
    one_line(distill.main(["--out", str(out), "--batch", "2", "--steps", "2", "--mask", "4"]),
             "last.pt", "--mask")
    assert (out / "last.pt").read_bytes() == good
    (out / "last.pt").write_bytes(good[:len(good) // 2])
    one_line(distill.main(["--out", str(out), "--batch", "2", "--steps", "2"]),
             "last.pt: not a readable checkpoint")
    torch.save({"format": "rtverify-train/1", "config": TrainConfig().to_dict()}, out / "last.pt")
    one_line(distill.main(["--out", str(out), "--batch", "2", "--steps", "2"]),
             "last.pt: not a training.distill checkpoint")
    one_line(distill.main(["--out", str(out), "--export", "x", "--export-dir",
                           str(tmp_path / "m")]), "not a training.distill checkpoint")
    one_line(distill.main(["--out", str(tmp_path / "none"), "--export", "x"]),
             "no such checkpoint")
    from training.soup import main as soup_main

    one_line(soup_main(["--out", str(tmp_path / "soup"), str(out / "last.pt")]),
             "not a training.distill checkpoint")


@pytest.mark.train
def test_distill_and_soup_checkpoints_are_on_disk_before_they_replace_the_last_one(
        tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from conftest import fsync_log, synthetic_teachers

    from training import distill
    from training.soup import main as soup_main

    out = tmp_path.resolve() / "run"
    synthetic_teachers(out)
    events = fsync_log(monkeypatch)
    distill.train(distill.parse_args(["--out", str(out), "--batch", "2", "--steps", "1"]))
    assert events[-3:] == [("fsync", str(out / "last.pt.tmp")), ("replace", str(out / "last.pt")),
                           ("fsync", str(out))]
    assert soup_main(["--out", str(out / "soup"), str(out / "last.pt")]) == 0
    assert events[-3:] == [("fsync", str(out / "soup" / "last.pt.tmp")),
                           ("replace", str(out / "soup" / "last.pt")), ("fsync", str(out / "soup"))]
