"""Distil a noise- and reverberation-robust streaming LSTM from clean-audio teachers.

    nohup python -m training.distill --root ../shared/data --out runs/distill --steps 2000 &
    python -m training.distill --root ../shared/data --out runs/distill --export NAME
    torchrun --nproc_per_node 8 -m training.distill --root ../shared/data --out runs/distill

Under ``torchrun`` (:mod:`training.distributed`: nccl on GPUs, gloo on CPU) each process draws
its own ``--batch`` windows per step, so a step sees ``batch x processes`` windows; only rank 0
writes ``<out>``. Build ``teachers.npz`` with one process first if it takes long (the other
ranks wait for it).

Student: the shipped default LSTM (its weights read back from ``default-short-fp32.onnx``, same
in-graph level normalisation), trained on *degraded* 1.6 s windows
(:func:`training.degrade.random_degrade`: babble of other speakers, coloured noise, synthetic
rooms, telephone band, level and speed), so that its embedding agrees with two teachers' views
of the *clean* window:

* the frozen current encoder (256-d; keeps the embedding space, hence the calibration, close),
  loss ``1 - cos(student, old(clean))``;
* CAM++ (192-d, through a new 256 -> 192 linear head on the student's embedding),
  loss ``1 - cos(head(student), campp(clean))``, weighted ``--campp-weight``.

Data: every shared recording except what a reported or dev list or the calibration needs:
LibriSpeech speakers other than the 51 held out by :mod:`training.dev_lists`, and the Arabic
Speech Commands ``train12`` speakers (calib6, val and test speakers, and FSDD, are left out).
Windows are cut from the runtime segmenter's speech (hop 0.8 s; an Arabic speaker's keywords are
joined first). Teacher embeddings of the clean windows are computed once and cached
(``<out>/teachers.npz``). Checkpoints every ``--ckpt-every`` steps (``<out>/last.pt``: step,
student, head, optimiser, rng); a run resumes from it by default.
"""

from __future__ import annotations

import argparse
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rtverify.config import FeatureConfig
from rtverify.core.fbank import cmn, fbank
from rtverify.core.features import mel_spectrogram

from . import degrade
from .cli import read_json, user_errors
from .dev_lists import LIBRI, heldout_speakers

WINDOW_S = 1.6
WINDOW = int(WINDOW_S * 16000)
HOP = WINDOW // 2
ROWS = 160


def _read(path: Path) -> np.ndarray:
    from .data import load_audio

    return load_audio(path)


def collect_windows(root: Path, extra: tuple[Path, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """int16 ``(n, WINDOW)`` clean speech windows and their int speaker ids. ``extra``: more
    corpus folders (``<speaker>/<clip>`` + ``MANIFEST.tsv``, e.g. Speech Commands); their
    :func:`training.data.extra_split` training speakers' clips are joined per speaker like the
    Arabic keywords."""
    from .data import arabic_splits, extra_split, from_manifest, select, speech_audio

    held = set(heldout_speakers(root))
    manifest = [ln.split("\t") for ln in (root / LIBRI / "MANIFEST.tsv").read_text()
                .splitlines()[1:] if ln]
    sources: list[tuple[str, np.ndarray]] = []
    for spk, path, *_ in manifest:
        if spk not in held:
            sources.append((f"libri:{spk}", speech_audio(_read(root / LIBRI / path))))
    corpus = root / "arabic-speech-commands"
    for spk in arabic_splits(corpus)["train12"]:
        clips = [speech_audio(_read(p)) for p in sorted((corpus / spk).glob("*.flac"))]
        sources.append((f"arabic:{spk}", np.concatenate(clips)))
    for corpus in extra:
        by: dict[str, list[np.ndarray]] = {}
        for u in select(from_manifest(corpus), extra_split(corpus)["train"]):
            by.setdefault(u.speaker, []).append(speech_audio(_read(u.path)))
        for spk, clips in sorted(by.items()):
            sources.append((f"{corpus.name}:{spk}", np.concatenate(clips)))
    wins, ids = [], []
    for k, (_, x) in enumerate(sources):
        for s in range(0, len(x) - WINDOW + 1, HOP):
            wins.append(np.round(x[s:s + WINDOW] * 32767).astype(np.int16))
            ids.append(k)
    return np.stack(wins), np.array(ids)


def mel_rows(x: np.ndarray) -> np.ndarray:
    return mel_spectrogram(x, FeatureConfig())[:ROWS]


@torch.no_grad()
def teacher_embeddings(wins: np.ndarray, log=print) -> tuple[np.ndarray, np.ndarray]:
    from .campp import load_campp
    from .from_onnx import load_shipped_student

    old = load_shipped_student(check=False)
    campp = load_campp()
    e_old, e_cam = [], []
    t = time.time()
    for a in range(0, len(wins), 32):
        x = wins[a:a + 32].astype(np.float32) / 32767
        e_old.append(old(torch.from_numpy(np.stack([mel_rows(w) for w in x]))).numpy())
        c = campp(torch.from_numpy(np.stack([cmn(fbank(w)) for w in x])))
        e_cam.append(F.normalize(c, dim=1).numpy())
        if a % 640 == 0:
            log(f"teachers {a}/{len(wins)} ({time.time() - t:.0f} s)")
    return np.concatenate(e_old), np.concatenate(e_cam)


def _rows_view(rows: np.ndarray, view: str) -> np.ndarray:
    """A short window's rows as the runtime gives them to the encoder (one of its short views)."""
    from rtverify.core.encoder import short_view_inputs

    return rows if len(rows) >= ROWS else short_view_inputs(rows, ROWS, (view,))[0]


def _cut_short(x: np.ndarray, rng, p_short: float) -> tuple[np.ndarray, bool]:
    """With probability ``p_short``, a 0.4-1.5 s piece of ``x`` (and True)."""
    if rng.random() >= p_short:
        return x, False
    n = int(rng.uniform(0.4, 1.5) * 16000)
    a = int(rng.integers(0, len(x) - n + 1))
    return x[a:a + n], True


def _level_only(x: np.ndarray, rng) -> np.ndarray:
    """``x`` at another level (-20..+5 dB), nothing else: the "clean" windows."""
    return np.clip(x * 10 ** (rng.uniform(-20, 5) / 20), -1, 1)


def _batch(wins, ids, rng, batch, p_clean, p_short=0.0, rooms=(), p_tilt=0.0, p_prosody=0.0):
    """Student inputs (degraded), the same windows clean (for the old teacher, computed on the
    fly), and which samples are full clean windows (those have a cached CAM++ target). With
    ``p_short``, a window is cut to 0.4-1.5 s and both versions go through one of the runtime's
    short views (zero padding after or before, or reflection), as a short utterance would."""
    idx = rng.choice(len(wins), batch, replace=False)
    feats, clean, full = [], [], []
    for i in idx:
        x, short = _cut_short(wins[i].astype(np.float32) / 32767, rng, p_short)
        others = rng.choice(len(wins), 8, replace=False)
        pool = [wins[j].astype(np.float32) / 32767 for j in others if ids[j] != ids[i]]
        if rng.random() < p_clean:  # clean windows too, so that clean audio does not drift
            y = _level_only(x, rng)
        else:
            y = degrade.random_degrade(x, rng, pool, rooms, p_tilt, p_prosody)
        view = str(rng.choice(["end", "start", "reflect"]))
        feats.append(_rows_view(mel_rows(y), view))
        clean.append(_rows_view(mel_rows(x), view))
        full.append(not short)
    return (idx, torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(clean)),
            torch.tensor(full))


def _ge2e_batch(wins, ids, rng, n_speakers, n_utts, p_clean, p_short, rooms=(), p_tilt=0.0,
                p_prosody=0.0):
    """``n_speakers x n_utts`` windows of different speakers, each degraded (or clean, level
    changed) on its own, as the student's input rows: a speaker's windows must stay together
    whatever happens to each of them (the GE2E objective the default was fine-tuned with)."""
    counts = np.bincount(ids)
    speakers = rng.choice(np.flatnonzero(counts >= n_utts), n_speakers, replace=False)
    feats = []
    for s in speakers:
        for i in rng.choice(np.flatnonzero(ids == s), n_utts, replace=False):
            x, _ = _cut_short(wins[i].astype(np.float32) / 32767, rng, p_short)
            if rng.random() < p_clean:
                y = _level_only(x, rng)
            else:
                others = rng.choice(len(wins), 8, replace=False)
                pool = [wins[j].astype(np.float32) / 32767 for j in others if ids[j] != s]
                y = degrade.random_degrade(x, rng, pool, rooms, p_tilt, p_prosody)
            feats.append(_rows_view(mel_rows(y), str(rng.choice(["end", "start", "reflect"]))))
    return torch.from_numpy(np.stack(feats))


class _Trainable(torch.nn.Module):
    """The student and its CAM++ head as one module, so that DDP sees the whole forward."""

    def __init__(self, student, head):
        super().__init__()
        self.student, self.head = student, head

    def forward(self, x):
        emb = F.normalize(self.student.raw_embedding(x), dim=1)
        return emb, F.normalize(self.head(emb), dim=1)


def head_encoder(student, head):
    """What ``--export NAME --embedding head`` exports: the student's embedding taken through
    its CAM++ head (``frames`` -> unit ``(batch, 192)``), the student's view of CAM++'s space
    instead of the old encoder's. The same module tree as the student (its ONNX node names,
    which quantisation picks layers by, stay), plus ``head``."""
    from .model import SpeakerEncoder

    class HeadEncoder(SpeakerEncoder):
        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            out = self.head(F.normalize(self.raw_embedding(frames), dim=1))
            return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)

    model = HeadEncoder(student.cfg)
    model.load_state_dict(student.state_dict())
    model.head = head
    return model


def make_student(mask: int = 0, kernel: int = 9):
    """The shipped default LSTM as a trainable student; with ``mask`` channels, the same
    network behind a learned spectral mask (:class:`~training.model.EncoderConfig`
    ``mask_channels``) that starts as the identity."""
    import dataclasses

    from .from_onnx import load_shipped_student
    from .model import SpeakerEncoder

    base = load_shipped_student(check=False)
    if not mask:
        return base
    student = SpeakerEncoder(dataclasses.replace(base.cfg, mask_channels=mask,
                                                 mask_kernel=kernel))
    missing, unexpected = student.load_state_dict(base.state_dict(), strict=False)
    if unexpected or not all(k.startswith("mask.") for k in missing):
        raise RuntimeError(f"mask student: missing {missing}, unexpected {unexpected}")
    return student


def train(args) -> torch.nn.Module:
    """Train; returns the (unwrapped) student + head module. Under torchrun each process draws its
    own ``--batch`` windows per step (effective batch ``batch x world size``, gradients averaged
    by DDP); only rank 0 writes the cache, the log and the checkpoints."""
    from . import distributed
    from .from_onnx import load_shipped_student

    torch.set_num_threads(1)
    d = distributed.setup()
    dev = d.device
    out: Path = args.out
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        logf = open(out / "log.txt", "a")
    distributed.barrier()

    def log(msg):
        if d.is_main:
            print(msg, file=logf, flush=True)

    cache = out / "teachers.npz"
    if d.is_main and not cache.is_file():
        wins, ids = collect_windows(args.root, tuple(args.extra))
        log(f"{len(wins)} windows of {WINDOW_S} s from {ids.max() + 1} speakers")
        t_old, t_cam = teacher_embeddings(wins, log)
        tmp = cache.with_suffix(".tmp.npz")  # a crash while writing leaves no half cache
        np.savez(tmp, wins=wins, ids=ids, old=t_old, campp=t_cam)
        os.replace(tmp, cache)
    distributed.barrier()  # the other ranks read what rank 0 cached
    try:
        with np.load(cache) as z:
            wins, ids, t_cam = z["wins"], z["ids"], z["campp"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{cache}: unreadable teacher cache ({type(err).__name__}); delete it "
                         "to build it again") from None
    if d.world_size > 1:
        log(f"{d.world_size} processes ({dev.type}), {args.batch} windows each: "
            f"effective batch {args.batch * d.world_size}")
    student = make_student(args.mask, args.mask_kernel).train()
    if args.mask:  # only the mask learns: the encoder's way of telling voices apart stays
        for p in [*student.lstm.parameters(), *student.linear.parameters()]:
            p.requires_grad_(False)
    old_teacher = load_shipped_student(check=False).eval().to(dev)
    torch.manual_seed(args.seed)  # the CAM++ head's initial weights: a run repeats itself
    head = torch.nn.Linear(256, 192)
    net = _Trainable(student, head).to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    ge2e = None
    if args.ge2e_weight > 0:
        from .losses import GE2ELoss
        from .transfer import resemblyzer_ge2e_scale

        # the scale the encoder was trained at, frozen (so DDP has nothing outside the model
        # to keep in sync)
        ge2e = GE2ELoss(*resemblyzer_ge2e_scale()).to(dev).requires_grad_(False)
    opt = torch.optim.Adam(params, lr=args.lr)
    rng = np.random.default_rng(distributed.rank_seed(args.seed, d.rank))
    step = 0
    ckpt = out / "last.pt"
    if ckpt.is_file() and not args.fresh:
        from .checkpoint import load_distilled, restore_rng

        state = load_distilled(ckpt)
        # the options that make another network (settings are kept as text; none: no mask)
        saved = {"mask": "0", **state.get("settings", {})}
        for key in ("mask", "mask_kernel") if args.mask or saved["mask"] != "0" else ():
            if saved.get(key) != str(getattr(args, key)):
                raise ValueError(f"{ckpt}: its student was trained with --{key.replace('_', '-')} "
                                 f"{saved.get(key)}, this run asks for {getattr(args, key)}: give "
                                 "the same, or --fresh / another --out to start anew")
        student.load_state_dict(state["student"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == d.world_size:
            restore_rng(ranks[d.rank], rng)
        elif d.world_size == 1:
            restore_rng(state["rng"], rng)
        else:  # a different number of processes: fresh, distinct streams from here on
            rng = np.random.default_rng([args.seed, d.rank, step])
            log(f"resumed with {d.world_size} processes from a {len(ranks or [0])}-process "
                "checkpoint: new generator streams")
        for g in opt.param_groups:  # the learning rate of this run, not the checkpoint's
            g["lr"] = args.lr
        log(f"resumed at step {step} (lr {args.lr}, p_clean {args.p_clean})")
    model = distributed.wrap(net, d)  # all ranks start from rank 0's (identical) weights
    # simulated rooms (pyroomacoustics), drawn once from their own seed: the same on every rank
    room_rng = np.random.default_rng(args.seed + 99)
    rooms = [degrade.shoebox_response(room_rng) for _ in range(args.rooms)]
    if rooms:
        log(f"{len(rooms)} simulated rooms")
    t_cam_t = torch.from_numpy(t_cam).to(dev)  # the old teacher runs on the fly (short views too)
    t0, run = time.time(), []
    while step < args.steps:
        idx, x, xc, full = _batch(wins, ids, rng, args.batch, args.p_clean, args.p_short, rooms,
                                  args.tilt, args.prosody)
        x, xc, full = x.to(dev), xc.to(dev), full.to(dev)
        with torch.no_grad():
            target_old = old_teacher(xc)
        n = len(x)
        if args.anchor_weight > 0:  # the same windows clean, to hold the clean mapping in place
            x = torch.cat([x, xc])
        n_anchor = len(x)
        if ge2e is not None:
            xg = _ge2e_batch(wins, ids, rng, args.ge2e_speakers, args.ge2e_utts, args.p_clean,
                             args.p_short, rooms, args.tilt, args.prosody).to(dev)
            x = torch.cat([x, xg])
        emb, cam_emb = model(x)
        loss_ge2e = torch.zeros(())
        if ge2e is not None:
            loss_ge2e = ge2e(emb[n_anchor:].reshape(args.ge2e_speakers, args.ge2e_utts, -1))
        loss_anchor = torch.zeros(())
        if args.anchor_weight > 0:
            loss_anchor = (1 - (emb[n:n_anchor] * target_old).sum(1)).mean()
        emb, cam_emb = emb[:n], cam_emb[:n]
        loss_old = (1 - (emb * target_old).sum(1)).mean()
        cam = 1 - (cam_emb * t_cam_t[idx]).sum(1)
        loss_cam = (cam * full).sum() / full.sum().clamp_min(1)
        loss = (loss_old + args.campp_weight * loss_cam + args.ge2e_weight * loss_ge2e
                + args.anchor_weight * loss_anchor)
        opt.zero_grad()
        loss.backward()  # DDP: gradients averaged over the processes here
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        step += 1
        run.append((loss_old.item(), loss_cam.item(), loss_ge2e.item(), loss_anchor.item()))
        if step % 20 == 0:
            a = np.mean(run, axis=0)
            a = [distributed.mean_scalar(float(v), d) for v in a]
            log(f"step {step} old {a[0]:.4f} campp {a[1]:.4f} ge2e {a[2]:.4f} "
                f"anchor {a[3]:.5f} ({time.time() - t0:.0f} s)")
            run = []
        if step % args.ckpt_every == 0 or step == args.steps:
            from .checkpoint import rng_state

            ranks = distributed.gather_object(rng_state(rng))  # every rank's stream, for resume
            if d.is_main:
                from .checkpoint import write

                write(ckpt, {"step": step, "student": student.state_dict(),
                             "head": head.state_dict(), "opt": opt.state_dict(),
                             "rng": ranks[0], "rng_ranks": ranks, "world_size": d.world_size,
                             "settings": {k: str(v) for k, v in vars(args).items()}})
            distributed.barrier()
    log("done")
    if d.is_main:
        logf.close()
    return net


def interpolate(init: dict, tuned: dict, alpha: float | dict[str, float]) -> dict:
    """``(1 - alpha) * init + alpha * tuned``, tensor by tensor (WiSE-FT: Wortsman et al., CVPR
    2022). The student starts from the shipped weights, so the two lie in one basin and the line
    between them trades the distilled robustness against the original clean accuracy.

    :param alpha: one weight for every tensor, or a weight per layer: keys ``l0``, ``l1``, ... for
        the LSTM layers' tensors (``..._l<k>``) and ``dense`` for the rest (missing: 1)."""
    if init.keys() != tuned.keys():
        raise ValueError("interpolate: the two state dicts hold different tensors")

    def weight(name: str) -> float:
        if not isinstance(alpha, dict):
            return alpha
        layer = name.rsplit("_", 1)[-1] if name.startswith("lstm.") else "dense"
        return float(alpha.get(layer, 1.0))

    return {k: (1 - weight(k)) * init[k] + weight(k) * tuned[k] if init[k].is_floating_point()
            else tuned[k] for k in init}


def export(args) -> int:
    from export.onnx_export import DEFAULT_PARITY_AUDIO, write_model
    from rtverify.config import WindowConfig
    from rtverify.core.encoder import MODELS_DIR, load_model_info

    from .checkpoint import load_distilled
    from .from_onnx import load_shipped_student

    torch.set_num_threads(1)
    state = load_distilled(args.out / "last.pt")
    settings = state.get("settings", {})
    student = make_student(int(settings.get("mask", 0) or 0), int(settings.get("mask_kernel", 9)))
    student.load_state_dict(state["student"])
    alpha = args.alpha
    if args.alpha_layers:
        alpha = {f"l{k}": float(a) for k, a in enumerate(args.alpha_layers.split(",")[:-1])}
        alpha["dense"] = float(args.alpha_layers.split(",")[-1])
    if alpha != 1.0:
        student.load_state_dict(interpolate(load_shipped_student(check=False).state_dict(),
                                            state["student"], alpha))
    student.eval()
    model = student
    if args.embedding == "head":
        head = torch.nn.Linear(256, 192)
        head.load_state_dict(state["head"])
        model = head_encoder(student, head).eval()
    base = load_model_info(MODELS_DIR / "default.onnx").raw
    decision = base["decision"]
    if args.decision:
        decision = read_json(args.decision, "--decision")
    extra = {"encoder": student.cfg.to_dict(), "attribution": base["attribution"],
             "training": {"objective": "distillation, 1 - cosine to clean-audio teachers "
                                       f"(old encoder + {args.campp_weight} x CAM++ via a 256->192 head)"
                                       + (f" + {args.ge2e_weight} x GE2E on degraded windows"
                                          if args.ge2e_weight else "")
                                       + (f" + {args.anchor_weight} x clean anchor"
                                          if args.anchor_weight else ""),
                          "init": base["model_id"], "steps": state["step"],
                          "embedding": "the student's embedding through its 256->192 CAM++ head"
                                       if args.embedding == "head" else "the student's own",
                          "weights": f"{alpha} x distilled + (1 - that) x init (linear "
                                     "interpolation of the weights, WiSE-FT)",
                          "settings": state["settings"],
                          "data": "LibriSpeech speakers not held out by training.dev_lists + "
                                  "Arabic train12; degraded by training.degrade.random_degrade"}}
    out_dir = Path(args.export_dir) if args.export_dir else MODELS_DIR
    path, side = write_model(model, out_dir, args.export, features=FeatureConfig(),
                             window=WindowConfig(), decision=decision, extra=extra,
                             audio_files=list(DEFAULT_PARITY_AUDIO), quantize=True)
    print(f"wrote {path} ({side['model_id']})")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/distill"))
    ap.add_argument("--extra", type=Path, action="append", default=[], metavar="DIR",
                    help="another corpus folder to distil on (<speaker>/<clip> + MANIFEST.tsv; "
                         "every third speaker is held out: training.data.extra_split); repeatable")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32,
                    help="windows per process and step (under torchrun the effective batch is "
                         "batch x number of processes)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--p-clean", type=float, default=0.3,
                    help="fraction of windows the student sees undegraded (level change only)")
    ap.add_argument("--p-short", type=float, default=0.0,
                    help="fraction of windows cut to 0.4-1.5 s and shown as the runtime's short views")
    ap.add_argument("--campp-weight", type=float, default=1.0)
    ap.add_argument("--ge2e-weight", type=float, default=0.0,
                    help="also train GE2E (speaker labels of the shared data) on degraded "
                         "windows, weighted so; 0: distillation only")
    ap.add_argument("--ge2e-speakers", type=int, default=8, help="GE2E: speakers per step")
    ap.add_argument("--ge2e-utts", type=int, default=4, help="GE2E: windows per speaker")
    ap.add_argument("--anchor-weight", type=float, default=0.0,
                    help="also show the student every window clean and hold its embedding to "
                         "the shipped model's, weighted so (keeps clean accuracy while the "
                         "degraded windows move; 0: off)")
    ap.add_argument("--rooms", type=int, default=0,
                    help="simulated rooms (pyroomacoustics) to draw from: half the reverberated "
                         "windows then go through one of them instead of a synthetic decay "
                         "(0: synthetic rooms only, as before)")
    ap.add_argument("--tilt", type=float, default=0.0, metavar="P",
                    help="share of degraded windows given a spectral tilt first (vocal effort: "
                         "training.degrade.tilt; 0: none, as before)")
    ap.add_argument("--prosody", type=float, default=0.0, metavar="P",
                    help="share of degraded windows given another pitch, pitch range and tempo "
                         "first, formants kept (emotion: training.degrade.prosody; 0: none)")
    ap.add_argument("--mask", type=int, default=0, metavar="C",
                    help="train only a spectral mask of C channels in front of the frozen LSTM "
                         "(0: train the LSTM itself, as before)")
    ap.add_argument("--mask-kernel", type=int, default=9,
                    help="rows the mask's first convolution sees (odd)")
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fresh", action="store_true", help="ignore <out>/last.pt")
    ap.add_argument("--export", metavar="NAME", help="export <out>/last.pt as NAME.onnx instead")
    ap.add_argument("--export-dir", help="directory for --export (default: rtverify/models)")
    ap.add_argument("--embedding", choices=("student", "head"), default="student",
                    help="--export: the student's own 256-d embedding (default), or that "
                         "embedding through the CAM++ head (192-d: CAM++'s space)")
    ap.add_argument("--decision", type=Path, help="decision block JSON for --export")
    ap.add_argument("--alpha", type=float, default=1.0,
                    help="--export the weights alpha x distilled + (1 - alpha) x the shipped "
                         "default's (1: the distilled student as trained)")
    ap.add_argument("--alpha-layers", metavar="A0,A1,A2,AD",
                    help="--alpha per LSTM layer and for the dense layer, e.g. 1,0.5,0,0")
    return ap.parse_args(argv)


@user_errors("training.distill")
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.export:
        return export(args)
    try:
        train(args)
    finally:
        from .distributed import cleanup

        cleanup()
    return 0


if __name__ == "__main__":
    from .distributed import exit_process

    exit_process(main())
