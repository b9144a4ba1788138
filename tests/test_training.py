"""Training: objectives, sampling, splits, augmentation, checkpoint/resume and export.

Everything runs on a tiny synthetic speaker set (voiced buzzes with speaker-specific pitch and
formants) and a tiny encoder, so the file takes seconds. Needs torch (the `train` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the `train` extra)")
pytestmark = pytest.mark.train

from training.data import (AudioBank, AugmentConfig, Utterance, arabic_splits,  # noqa: E402
                           augment, crop_window, from_folder, speech_segments)
from training.losses import GE2ELoss, PairLoss  # noqa: E402
from training.train import PairSampler, TrainConfig, Trainer, check_speakers  # noqa: E402

from conftest import DATA, DEMO, SR, read16k, write_audio  # noqa: E402

TINY = dict(layers=1, hidden=24, proj=16, relu=False, input_transform="logcmn", reverse_time=True,
            init="scratch",
            val_trials="", eval_every=0, ckpt_every=0, threads=1)


def synthetic_speaker(k: int, n_clips: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Clips of one synthetic "voice": a pulse train at a speaker-specific pitch through two
    speaker-specific resonances, with random length, pitch jitter and level."""
    from scipy.signal import lfilter

    f0 = 90.0 + 35.0 * k
    formants = (400.0 + 150.0 * k, 1400.0 + 250.0 * ((k * 3) % 5))
    clips = []
    for _ in range(n_clips):
        n = int(SR * rng.uniform(0.5, 1.0))
        pitch = f0 * rng.uniform(0.95, 1.05)
        x = np.zeros(n)
        x[(np.arange(0, n, SR / pitch)).astype(int)] = 1.0
        for f in formants:
            r, th = 0.97, 2 * np.pi * f / SR
            x = lfilter([1.0], [1.0, -2 * r * np.cos(th), r * r], x)
        x = x / np.abs(x).max() * 10 ** (rng.uniform(-25, -5) / 20)
        clips.append((x + 1e-3 * rng.standard_normal(n)).astype(np.float32))
    return clips


@pytest.fixture(scope="module")
def bank() -> AudioBank:
    rng = np.random.default_rng(0)
    return AudioBank.from_arrays({f"spk{k}": synthetic_speaker(k, 6, rng) for k in range(5)})


def tiny_trainer(bank, tmp_path, **kw) -> Trainer:
    cfg = TrainConfig(**{**TINY, **kw})
    return Trainer(cfg, tmp_path, bank=bank, quiet=True)


# -- objectives ---------------------------------------------------------------------------------
def ge2e_reference(emb: torch.Tensor, w: float, b: float) -> float:
    """GE2E softmax loss written out utterance by utterance (Wan et al., eq. 6 and 9)."""
    n, m, _ = emb.shape
    total = 0.0
    for j in range(n):
        for i in range(m):
            e = emb[j, i]
            logits = []
            for k in range(n):
                members = [emb[k, x] for x in range(m) if not (k == j and x == i)]
                c = torch.stack(members).mean(0)
                logits.append(w * torch.dot(e, c) / (e.norm() * c.norm()) + b)
            logits = torch.stack(logits)
            total += float(torch.logsumexp(logits, 0) - logits[j])
    return total / (n * m)


def test_ge2e_matches_the_definition_and_rewards_separated_speakers():
    gen = torch.Generator().manual_seed(0)
    loss = GE2ELoss(10.0, -5.0)
    random = torch.nn.functional.normalize(torch.randn(4, 3, 8, generator=gen), dim=2)
    expected = ge2e_reference(random, 10.0, -5.0)
    assert float(loss(random).detach()) == pytest.approx(expected, rel=1e-5)

    axes = torch.eye(8)[:4]  # one orthogonal direction per speaker
    separated = torch.nn.functional.normalize(
        axes[:, None, :] + 0.05 * torch.randn(4, 3, 8, generator=gen), dim=2)
    mixed = separated[torch.randperm(4 * 3, generator=gen) % 4, torch.arange(12) % 3][None]
    mixed = mixed.reshape(4, 3, 8)
    low, high = float(loss(separated).detach()), float(loss(mixed).detach())
    assert low < 0.05
    assert high > 1.0


def test_ge2e_refuses_degenerate_batches():
    with pytest.raises(ValueError, match="2 speakers x 2 utterances"):
        GE2ELoss()(torch.nn.functional.normalize(torch.randn(3, 1, 4), dim=2))


def test_pair_loss_is_bce_of_the_sigmoid_dot_product():
    a = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    same = torch.tensor([1.0, 0.0])
    p = torch.sigmoid(torch.tensor([1.0, -0.5]))
    expected = -(torch.log(p[0]) + torch.log(1 - p[1])) / 2
    assert float(PairLoss()(a, b, same)) == pytest.approx(float(expected), rel=1e-6)


# -- sampling and splits ------------------------------------------------------------------------
def test_pair_sampler_is_balanced_and_stays_inside_its_split(bank):
    sampler = PairSampler(bank)
    pairs = sampler.sample(400, np.random.default_rng(1))
    same = [p for p in pairs if p[4] == 1]
    diff = [p for p in pairs if p[4] == 0]
    assert len(same) == len(diff) == 200
    assert all(a == b and i != j for a, i, b, j, _ in same)
    assert all(a != b for a, _, b, _, _ in diff)
    # every speaker of the split turns up, and only those
    assert {p[0] for p in pairs} | {p[2] for p in pairs} == set(range(len(bank.speakers)))
    with pytest.raises(ValueError, match="even"):
        sampler.sample(5, np.random.default_rng(1))


def test_arabic_splits_are_fixed_and_disjoint():
    s = arabic_splits(DATA / "arabic-splits")
    assert s["train12"] == ["00000001", "00000005", "00000006", "00000009", "00000011", "00000013",
                            "00000015", "00000016", "00000017", "00000018", "00000019", "00000020"]
    assert s["calib6"] == ["00000022", "00000023", "00000024", "00000027", "00000029", "00000030"]
    assert sorted(s["train12"] + s["calib6"]) == s["train18"]
    groups = [set(s["train18"]), set(s["val"]), set(s["test"])]
    assert [len(g) for g in groups] == [18, 6, 6]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_a_speaker_in_training_and_held_out_data_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    train = [Utterance("a", corpus / "a" / "1.wav"), Utterance("b", corpus / "b" / "1.wav")]
    check_speakers(train, [Utterance("c", corpus / "c" / "1.wav")], "val")
    with pytest.raises(ValueError, match="speaker.* b .*val"):
        check_speakers(train, [Utterance("b", corpus / "b" / "2.wav")], "val")
    # the same id in another corpus is another person
    check_speakers(train, [Utterance("b", tmp_path / "other" / "b" / "1.wav")], "val")


# -- data ---------------------------------------------------------------------------------------
def test_folder_dataset_reads_speaker_folders(tmp_path):
    rng = np.random.default_rng(2)
    for spk in ("x", "y"):
        (tmp_path / spk).mkdir()
        for i in range(2):
            write_audio(tmp_path / spk / f"{i}.wav", rng.standard_normal(800) * 0.1, 8000)
    (tmp_path / "x" / "notes.txt").write_text("not audio")
    utts = from_folder(tmp_path)
    assert [(u.speaker, u.path.name) for u in utts] == [("x", "0.wav"), ("x", "1.wav"),
                                                        ("y", "0.wav"), ("y", "1.wav")]
    with pytest.raises(ValueError, match="no <speaker>"):
        from_folder(tmp_path / "x")


def test_augmentation_keeps_length_and_range_and_band_limits():
    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal(SR)).astype(np.float32)
    for _ in range(20):
        y = augment(x, rng, AugmentConfig())
        assert y.shape == x.shape and y.dtype == np.float32
        assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    only_band = AugmentConfig(gain_db=(0, 0), p_noise=0, p_band_limit=1.0, p_reverb=0)
    y = augment(x, rng, only_band)
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert spec[freqs > 4400].sum() < 1e-3 * spec[freqs < 3600].sum()
    noisy = augment(x * 0, rng, AugmentConfig(gain_db=(0, 0), p_noise=1.0, p_band_limit=0,
                                              p_reverb=0, snr_db=(10, 10)))
    assert np.abs(noisy).max() < 1e-5  # noise is set relative to the signal: silence stays silent


def test_short_speech_is_padded_like_the_runtime_and_segments_come_from_its_vad():
    rows = np.ones((70, 40), np.float32)
    w = crop_window(rows, None, 160)
    assert w.shape == (160, 40) and (w[:70] == 1).all() and (w[70:] == 0).all()
    segs = speech_segments(read16k(DEMO / "enroll_1.flac"))
    assert segs and sum(len(s) for s in segs) / SR > 2.0


# -- training, checkpoints, export --------------------------------------------------------------
def test_ge2e_training_lowers_the_loss(bank, tmp_path):
    trainer = tiny_trainer(bank, tmp_path, objective="ge2e", steps=40, lr=1e-2, augment="none",
                           speakers_per_batch=5, utterances_per_speaker=4)
    losses = [r["loss"] for r in trainer.run()]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_resume_continues_exactly_as_an_uninterrupted_run(bank, tmp_path):
    kw = dict(objective="pairs", steps=6, lr=3e-3, pairs_per_batch=8, augment="default")
    straight = [r["loss"] for r in tiny_trainer(bank, tmp_path / "a", **kw).run()]

    first = tiny_trainer(bank, tmp_path / "b", **kw)
    part1 = [r["loss"] for r in first.run(until=3)]
    del first
    second = tiny_trainer(bank, tmp_path / "b", **kw)
    second.resume(tmp_path / "b" / "last.pt")
    assert second.step == 3
    part2 = [r["loss"] for r in second.run()]
    assert part1 + part2 == straight
    assert len(set(straight)) == 6  # the losses really moved, so the comparison means something


def test_resume_refuses_a_checkpoint_of_another_run(bank, tmp_path):
    tiny_trainer(bank, tmp_path, objective="pairs", steps=1, pairs_per_batch=4).run()
    other = tiny_trainer(bank, tmp_path / "o", objective="pairs", steps=1, pairs_per_batch=4,
                         hidden=32)
    with pytest.raises(ValueError, match="hidden=24"):
        other.resume(tmp_path / "last.pt")


def test_export_from_a_checkpoint_passes_the_onnx_parity_check(bank, tmp_path):
    from export.__main__ import main as export_main
    from rtverify.core.encoder import EncoderSession
    from rtverify.core.pipeline import embed_recording
    from rtverify.io.sources import FileSource

    trainer = tiny_trainer(bank, tmp_path / "run", objective="ge2e", steps=2,
                           speakers_per_batch=3, utterances_per_speaker=2)
    trainer.run()
    out = tmp_path / "models"
    rc = export_main(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--name", "tiny",
                      "--out", str(out), "--audio", str(DEMO / "enroll_2.flac"),
                      str(DATA / "arabic_00000003_seven_02.flac")])
    assert rc == 0
    side = json.loads((out / "tiny.json").read_text())
    assert side["export_parity"]["max_abs_diff"] <= 1e-4
    assert side["training"]["objective"] == "ge2e"
    assert side["training"]["steps"] == 2
    assert side["training"]["speakers"] == bank.speakers
    assert side["encoder"]["hidden"] == 24 and "attribution" not in side  # trained from scratch
    session = EncoderSession(out / "tiny.onnx")
    rec = embed_recording(session, FileSource(DEMO / "enroll_2.flac"))
    assert rec.vector.shape == (16,) and abs(np.linalg.norm(rec.vector) - 1) < 1e-5


def test_reading_backwards_keeps_short_padded_windows_apart():
    """Why models trained from scratch set reverse_time: read forwards, a fresh LSTM ends on
    the runtime's zero padding and maps every short segment to nearly the same embedding."""
    from training.model import EncoderConfig, SpeakerEncoder

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    speech = torch.rand(2, 60, 40, generator=gen) * 10 ** torch.linspace(-4, 0, 2)[:, None, None]
    windows = torch.cat([speech, torch.zeros(2, 100, 40)], dim=1)  # 0.6 s padded to 1.6 s
    cos = {}
    for reverse in (False, True):
        torch.manual_seed(0)
        model = SpeakerEncoder(EncoderConfig(layers=2, hidden=32, proj=16, relu=False,
                                             input_transform="logcmn", reverse_time=reverse))
        with torch.no_grad():
            a, b = model(windows)
        cos[reverse] = float(a @ b)
    assert cos[False] > 0.999
    assert cos[True] < 0.99


def test_joined_clips_fill_whole_windows(bank, tmp_path):
    trainer = tiny_trainer(bank, tmp_path, objective="ge2e", steps=1, augment="none", p_concat=1.0)
    windows = trainer._windows([(0, 0), (1, 2), (3, 5)])
    assert windows.shape == (3, 160, 40)
    assert bool((windows.sum(dim=2) > 0).all())  # no zero padding left: each row is audio
    plain = tiny_trainer(bank, tmp_path / "p", objective="ge2e", steps=1, augment="none")
    assert bool((plain._windows([(0, 0)]).sum(dim=2)[0, -20:] == 0).all())  # 0.5-1 s clips pad


def test_distillation_measures_drift_from_the_initial_encoder(bank, tmp_path):
    trainer = tiny_trainer(bank, tmp_path, objective="ge2e", steps=5, lr=1e-2, distill=1.0,
                           speakers_per_batch=4, utterances_per_speaker=3, augment="none")
    drift = [r["drift"] for r in trainer.run()]
    assert drift[0] == pytest.approx(0.0, abs=1e-6)  # step 1 starts from the teacher's weights
    assert drift[-1] > 1e-4


# -- evaluation: the model-selection measure is what `rtverify eval` reports --------------------
@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    """Takes and lines of the bundled conversation as files (two speakers in several segments,
    three others), a silent file, and a 0.2 s blip that ``listen`` drops as too short."""
    import soundfile as sf

    meta = json.loads((DEMO / "conversation.json").read_text())
    conv = read16k(DEMO / meta["conversation"])
    root = tmp_path_factory.mktemp("evalroot")
    for name in meta["enroll"]:
        (root / name).write_bytes((DEMO / name).read_bytes())
    lines = []
    for i, line in enumerate(meta["script"]):
        lines.append(f"line{i}.flac")
        sf.write(root / lines[-1], conv[int(line["start_s"] * SR):int(line["end_s"] * SR)], SR)
    sf.write(root / "silence.wav", np.zeros(SR, np.float32), SR)
    pad = np.zeros(4000, np.float32)
    sf.write(root / "blip.wav", np.concatenate([pad, conv[24000:27200], pad]), SR)
    e1, e2 = meta["enroll"]
    rows = [f"1 {e1} {e2}", f"1 {e1} line0.flac", f"1 {e2} line3.flac", "1 line0.flac line3.flac",
            f"1 {e1} blip.wav"]
    rows += [f"0 {e} line{i}.flac" for e in (e1, e2) for i in (1, 2, 4)]
    rows += ["0 line1.flac line2.flac", f"0 silence.wav {e1}", "0 line4.flac blip.wav"]
    (root / "trials.txt").write_text("\n".join(rows) + "\n")
    return root


def test_model_selection_measures_what_rtverify_eval_reports(bank, tmp_path, eval_root, capsys):
    """The Validator (torch, training's model selection) and `rtverify eval` (ONNX, runtime) on
    the same model and list: the same file embeddings (silent file: none; blip: its short
    speech; multi-segment files pooled alike) and the same EER and minDCF."""
    from export.onnx_export import write_model
    from rtverify import evaluation as ev
    from rtverify.cli.entry import main as rtverify_main
    from rtverify.config import FeatureConfig, WindowConfig
    from rtverify.core.encoder import EncoderSession
    from training.train import Validator

    trainer = tiny_trainer(bank, tmp_path / "run", objective="ge2e", steps=2,
                           speakers_per_batch=3, utterances_per_speaker=2)
    trainer.run()
    onnx, _ = write_model(trainer.model, tmp_path / "m", "tiny", features=FeatureConfig(),
                          window=WindowConfig(), decision={"threshold": 0.75}, extra={},
                          audio_files=[DEMO / "enroll_2.flac"])
    trials = eval_root / "trials.txt"
    val = Validator(str(trials), str(eval_root), FeatureConfig(), WindowConfig())
    ours = val.embeddings(trainer.model)
    runtime = ev.embed_files(EncoderSession(onnx), [eval_root / f for f in val.files])
    np.testing.assert_allclose(ours, runtime.vectors, atol=2e-4)  # NaN rows must match too
    assert val.files.index("silence.wav") == int(np.flatnonzero(~runtime.has_speech)[0])

    got = val(trainer.model)
    assert rtverify_main(["eval", "--trials", str(trials), "--root", str(eval_root),
                          "--model", str(onnx), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files_without_speech"] == got["files_without_speech"] == 1
    for key in ("eer", "min_dcf", "accuracy_at_eer"):
        assert got[key] == pytest.approx(report[key], abs=1e-9), key
    assert got["threshold_eer"] == pytest.approx(report["threshold_eer"], abs=1e-3)


def test_model_selection_eer_on_hand_made_scores(eval_root, tmp_path, capsys):
    """Embeddings chosen so that the targets score 0.6, 0.8, 0.9 and the impostors 0.1, 0.2, 0.3,
    0.7. Accepting score >= t: for 0.3 < t <= 0.6 no miss and 1/4 false alarms, for
    0.6 < t <= 0.7 1/3 misses and still 1/4 false alarms: the miss rate jumps over the false
    alarms, the curves cross at 1/4, threshold 0.6 + 3/4 * 0.1. (The nearest-point rule training
    used gave (1/3 + 1/4) / 2.) `rtverify eval` on the same embeddings (from its cache) agrees."""
    from rtverify import evaluation as ev
    from rtverify.cli.entry import main as rtverify_main
    from rtverify.config import FeatureConfig, SegmenterConfig, WindowConfig
    from rtverify.core.encoder import EncoderSession
    from training.train import Validator

    names = sorted(p.name for p in eval_root.iterdir() if p.suffix in (".flac", ".wav"))
    enrol, tests = names[0], names[1:8]
    scores = {tests[0]: 0.6, tests[1]: 0.8, tests[2]: 0.9,
              tests[3]: 0.1, tests[4]: 0.2, tests[5]: 0.3, tests[6]: 0.7}
    trials = tmp_path / "hand.txt"
    trials.write_text("".join(f"{int(f in tests[:3])} {enrol} {f}\n" for f in tests))
    val = Validator(str(trials), str(eval_root), FeatureConfig(), WindowConfig())
    vectors = np.zeros((len(val.files), 2))
    for i, f in enumerate(val.files):
        angle = np.arccos(scores.get(f, 1.0))
        vectors[i] = np.cos(angle), np.sin(angle)
    got = val.measure(vectors)
    assert got["eer"] == pytest.approx(0.25)
    assert got["threshold_eer"] == pytest.approx(0.675)
    assert got["accuracy_at_eer"] == pytest.approx(5 / 7)  # 0.6 missed, 0.7 accepted

    session = EncoderSession("default-short")  # raw cosines (the default's eval scores margins)
    cache = ev.EmbeddingCache(tmp_path / "cache", ev.settings_key(session, SegmenterConfig()))
    for f, v in zip(val.files, vectors):
        full = np.zeros(session.dim, np.float32)
        full[:2] = v
        cache.put(eval_root / f, full, 3.0, False)
    cache.save()
    assert rtverify_main(["eval", "--trials", str(trials), "--root", str(eval_root), "--cache",
                          str(tmp_path / "cache"), "--json", "--no-norm",
                          "--model", "default-short"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("eer", "threshold_eer", "min_dcf", "accuracy_at_eer"):
        assert got[key] == pytest.approx(report[key], abs=1e-6), key


def test_a_bad_validation_list_is_a_value_error_naming_its_line(tmp_path, eval_root):
    from rtverify.config import FeatureConfig, WindowConfig
    from training.train import Validator

    bad = tmp_path / "bad.txt"
    bad.write_text("1 enroll_1.flac enroll_2.flac\n0 enroll_1.flac gone.flac\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: gone.flac: no such file"):
        Validator(str(bad), str(eval_root), FeatureConfig(), WindowConfig())


# -- the command lines with bad input: one line naming the problem, exit code 2 ----------------
def one_line_error(rc, capsys, *says) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert rc == 2, err
    last = err.strip().splitlines()[-1]
    for s in says:
        assert s in last, err
    return last


def speaker_folders(root: Path, n_speakers: int = 3, n_clips: int = 2) -> Path:
    rng = np.random.default_rng(4)
    for k in range(n_speakers):
        (root / f"spk{k}").mkdir(parents=True)
        for i, clip in enumerate(synthetic_speaker(k, n_clips, rng)):
            write_audio(root / f"spk{k}" / f"{i}.wav", clip, SR)
    return root


TINY_CLI = ["--val-trials", "", "--steps", "1", "--pairs-per-batch", "2", "--layers", "1",
            "--hidden", "8", "--proj", "8"]


@pytest.fixture
def no_shared_data(monkeypatch):
    """The trainer's held-out-speaker checks read the shared Arabic corpus: not needed here."""
    monkeypatch.setattr(Trainer, "_check_data", lambda self, utts: None)


def test_training_and_export_name_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    from export.__main__ import main as export_main
    from training.__main__ import main as training_main

    missing = tmp_path / "none.pt"
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    torch.save({"step": 1, "student": {"w": torch.ones(2)}}, tmp_path / "distilled.pt")
    one_line_error(training_main(["eval", str(missing)]), capsys, "none.pt: no such checkpoint")
    one_line_error(training_main(["eval", str(text)]), capsys, "notes.pt: not a readable checkpoint")
    one_line_error(export_main(["--checkpoint", str(empty), "--out", str(tmp_path / "m")]), capsys,
                   "empty.pt: not a readable checkpoint")
    one_line_error(export_main(["--checkpoint", str(missing), "--out", str(tmp_path / "m")]),
                   capsys, "none.pt: no such checkpoint")
    one_line_error(export_main(["--checkpoint", str(tmp_path / "distilled.pt"), "--out",
                                str(tmp_path / "m")]), capsys, "a training.distill checkpoint")
    assert not (tmp_path / "m").exists()


def test_a_corpus_with_a_file_that_is_not_audio_is_named(tmp_path, capsys, no_shared_data):
    from training.__main__ import main as training_main

    corpus = speaker_folders(tmp_path / "corpus")
    (corpus / "spk1" / "empty.wav").write_bytes(b"")
    rc = training_main(["pairs", "--data", str(corpus), "--out", str(tmp_path / "run"), *TINY_CLI])
    one_line_error(rc, capsys, "empty.wav: empty file")


def test_a_malformed_manifest_is_named(tmp_path, capsys, no_shared_data):
    from training.__main__ import main as training_main
    from training.data import from_manifest

    corpus = speaker_folders(tmp_path / "corpus")
    (corpus / "MANIFEST.tsv").write_text("speaker,path\nspk0,spk0/0.wav\n")  # commas, not tabs
    with pytest.raises(ValueError, match="MANIFEST.tsv: .*speaker.*path"):
        from_manifest(corpus)
    rc = training_main(["pairs", "--data", str(corpus), "--out", str(tmp_path / "run"), *TINY_CLI])
    one_line_error(rc, capsys, "MANIFEST.tsv")
    (corpus / "MANIFEST.tsv").write_text("speaker\tpath\nspk0\n")  # a short row
    with pytest.raises(ValueError, match="MANIFEST.tsv:2"):
        from_manifest(corpus)


def test_the_same_command_again_resumes_and_never_overwrites_an_earlier_run(tmp_path, capsys,
                                                                           no_shared_data):
    """Training resumes by default: the command that was killed, run again, goes on from its
    last.pt (no --resume needed). A last.pt it cannot continue, or a best.pt without a last.pt,
    is refused in one line and left as it was, never replaced by step 1 of a new run."""
    from training.__main__ import main as training_main

    corpus = speaker_folders(tmp_path / "corpus")
    run = tmp_path / "run"
    cmd = ["pairs", "--data", str(corpus), "--out", str(run), *TINY_CLI, "--ckpt-every", "1"]
    assert training_main(cmd) == 0
    capsys.readouterr()
    assert training_main([*cmd, "--steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "resumed" in err and "at step 1" in err, err
    import torch

    assert torch.load(run / "last.pt", weights_only=False)["step"] == 2

    (run / "last.pt").write_bytes(b"an earlier run's checkpoint")
    rc = training_main(cmd)
    one_line_error(rc, capsys, str(run / "last.pt"))
    assert (run / "last.pt").read_bytes() == b"an earlier run's checkpoint"

    (run / "last.pt").unlink()
    (run / "best.pt").write_bytes(b"an earlier run's best")
    rc = training_main(cmd)
    one_line_error(rc, capsys, str(run), "best.pt")
    assert (run / "best.pt").read_bytes() == b"an earlier run's best"

    rc = training_main([*cmd, "--out", str(tmp_path / "new"), "--resume"])
    one_line_error(rc, capsys, "no run to resume")


def test_export_names_a_malformed_decision_or_extra_file(bank, tmp_path, capsys):
    from export.__main__ import main as export_main

    tiny_trainer(bank, tmp_path / "run", objective="pairs", steps=1, pairs_per_batch=4).run()
    bad = tmp_path / "decision.json"
    bad.write_text("{threshold: 0.7}\n")
    for flag in ("--decision", "--extra"):
        rc = export_main(["--checkpoint", str(tmp_path / "run" / "last.pt"), flag, str(bad),
                          "--out", str(tmp_path / "m")])
        one_line_error(rc, capsys, f"{flag} {bad}: not valid JSON")
    assert not (tmp_path / "m").exists()


def test_dev_lists_name_a_root_that_is_not_the_shared_data(tmp_path, capsys):
    from training.dev_lists import main

    rc = main(["--root", str(tmp_path / "none"), "--out", str(tmp_path / "dev")])
    one_line_error(rc, capsys, str(tmp_path / "none"), "No such file or directory")


def test_a_checkpoint_is_on_disk_before_it_replaces_the_last_good_one(tmp_path, monkeypatch):
    """A crash of the machine (not just the process) right after the rename must not leave an
    empty last.pt: the new file is fsynced before it replaces the old, and the rename after."""
    from conftest import fsync_log

    from training import checkpoint as ckpt_io

    folder = tmp_path.resolve()
    events = fsync_log(monkeypatch)
    ckpt_io.save(folder / "last.pt", {"step": 3})
    assert events == [("fsync", str(folder / "last.pt.tmp")), ("replace", str(folder / "last.pt")),
                      ("fsync", str(folder))]
    assert ckpt_io.load(folder / "last.pt")["step"] == 3


def test_a_recording_replaced_under_its_name_is_read_again_not_taken_from_the_cache(tmp_path):
    """The training audio cache is keyed by the files' sizes and times too: a user who fixes a
    recording in their corpus (same name) trains on the new audio, not the cached old one."""
    rng = np.random.default_rng(7)
    corpus = tmp_path / "corpus"
    (corpus / "spk0").mkdir(parents=True)
    first, second = synthetic_speaker(0, 2, rng)
    path = corpus / "spk0" / "0.wav"
    write_audio(path, first, SR)
    utts = [Utterance("spk0", path)]
    cache = tmp_path / "cache"
    before = AudioBank.load(utts, cache_dir=cache, progress=False).clips[0][0]
    assert len(list(cache.glob("speech-*.npz"))) == 1
    again = AudioBank.load(utts, cache_dir=cache, progress=False).clips[0][0]  # from the cache
    np.testing.assert_array_equal(before, again)
    write_audio(path, second[: len(second) // 2], SR)  # another recording, same name
    after = AudioBank.load(utts, cache_dir=cache, progress=False).clips[0][0]
    assert len(after) != len(before)
