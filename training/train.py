"""The training loop: batches of augmented windows -> encoder -> objective -> Adam.

Runs are reproducible: one seeded numpy generator draws every batch and augmentation, and its
state, torch's and Python's are saved in each checkpoint with the model and the optimiser, so a
resumed run continues with exactly the losses an uninterrupted one would have seen.

Under ``torchrun --nproc_per_node N -m training ...`` (:mod:`training.distributed`) the model and
the objective's parameters train in DistributedDataParallel: every process draws its own batch
(its own generator, seeded ``seed + 1000 rank``; rank 0 keeps the single-process seed), so a step
sees N batches (``speakers_per_batch`` / ``pairs_per_batch`` are per process) and DDP averages
their gradients. Only rank 0 validates, logs and writes checkpoints; ``last.pt`` keeps every rank's
generator state, and all ranks resume from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rtverify import evaluation as ev
from rtverify.config import FeatureConfig, WindowConfig
from rtverify.errors import InputError
from rtverify.metrics import accuracy, compute_metrics

from . import checkpoint as ckpt_io
from . import distributed
from .data import (DATA_ROOT, AudioBank, AugmentConfig, Utterance, arabic_splits, clip_window,
                   dataset, runtime_windows)
from .losses import GE2ELoss, PairLoss
from .model import EncoderConfig, SpeakerEncoder, level_power

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "runs"


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in its checkpoints)."""

    objective: str = "ge2e"
    """``pairs`` (the seed's Siamese BCE) or ``ge2e``."""
    name: str = "ge2e"
    """Run folder under ``runs/``."""
    data: list[str] = field(default_factory=lambda: ["arabic:train12"])
    """Training sets: ``arabic:<split>``, a corpus folder with MANIFEST.tsv, or a speaker folder."""
    val_trials: str = str(DATA_ROOT / "trials" / "arabic-val-1s.txt")
    """Trial list used for model selection (``""``: none)."""
    val_root: str = str(DATA_ROOT)
    init: str = "resemblyzer"
    """``resemblyzer`` (pretrained GE2E weights) or ``scratch``."""
    layers: int = 3
    hidden: int = 256
    proj: int = 256
    relu: bool = True
    input_transform: str = "level"
    level_dbfs: float = -30.0
    """``level`` transform: windows quieter than this are raised to it (dBFS of the waveform)."""
    level_two_sided: bool = False
    """``level`` transform: louder windows are also lowered to ``level_dbfs`` (loudness-invariant
    embeddings)."""
    reverse_time: bool = False
    """Read windows backwards (see :class:`~training.model.EncoderConfig`)."""
    steps: int = 300
    lr: float = 1e-4
    """Peak learning rate (Adam); cosine decay to ``lr_final_ratio * lr`` after warm-up."""
    lr_final_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    l2sp: float = 0.0
    """Weight of the squared distance to the initial weights (L2-SP), summed over tensors."""
    distill: float = 0.0
    """Weight of ``1 - cos(embedding, initial model's embedding)`` on the same training windows:
    keeps a fine-tuned encoder near the one it started from where the few training speakers
    say nothing (a self-distillation anchor in embedding space)."""
    freeze_layers: int = 0
    """Lower LSTM layers kept fixed (fine-tuning)."""
    p_concat: float = 0.0
    """Probability that a training window is cut from several clips of its speaker joined
    together, so 1 s keywords also make full 1.6 s windows (as long speech gives)."""
    grad_clip: float = 3.0
    speakers_per_batch: int = 12
    """GE2E: N speakers per batch."""
    utterances_per_speaker: int = 8
    """GE2E: M utterances per speaker."""
    pairs_per_batch: int = 64
    """pairs: pairs per batch (half same-speaker, half different)."""
    augment: str = "default"
    """``default`` (:class:`~training.data.AugmentConfig`) or ``none``."""
    eval_every: int = 50
    ckpt_every: int = 25
    seed: int = 1234
    threads: int = 1
    allow_calibration_speakers: bool = False
    """The GE2E (production) encoder refuses the Arabic ``calib6`` speakers unless this is set."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)

    def encoder_config(self) -> EncoderConfig:
        target = level_power(self.level_dbfs)
        return EncoderConfig(hidden=self.hidden, layers=self.layers, proj=self.proj,
                             relu=self.relu, input_transform=self.input_transform,
                             level_target=target,
                             level_ceiling=target if self.level_two_sided else None,
                             reverse_time=self.reverse_time)

    def augment_config(self) -> AugmentConfig:
        if self.augment not in ("default", "none"):
            raise ValueError(f"augment must be 'default' or 'none', got {self.augment!r}")
        return AugmentConfig() if self.augment == "default" else AugmentConfig.none()


# -- speaker bookkeeping ------------------------------------------------------------------------
def speaker_keys(utts: Sequence[Utterance]) -> set[tuple[str, str]]:
    """(corpus folder, speaker id) pairs: ids are only unique within a corpus."""
    return {(str(u.path.parent.parent.resolve()), u.speaker) for u in utts}


def check_speakers(train: Sequence[Utterance], held_out: Sequence[Utterance], what: str) -> None:
    """Refuse training speakers who also appear in held-out material."""
    both = sorted(s for _, s in speaker_keys(train) & speaker_keys(held_out))
    if both:
        raise ValueError(f"speaker(s) {', '.join(both)} are in both the training data and {what}")


def trial_utterances(trials_path: str, root: str) -> list[Utterance]:
    """Speakers of a trial list's files, taken from their ``<speaker>/<file>`` paths."""
    try:
        files = sorted(ev.read_trials(trials_path, root).files)
    except InputError as err:  # the training CLI reports ValueErrors in one line
        raise ValueError(str(err)) from None
    return [Utterance(Path(f).parent.name, Path(root) / f) for f in files]


# -- batches ------------------------------------------------------------------------------------
class PairSampler:
    """Balanced same/different-speaker pairs drawn from one bank (so from one split only)."""

    def __init__(self, bank: AudioBank) -> None:
        usable = [i for i, c in enumerate(bank.clips) if len(c) >= 2]
        if len(bank.speakers) < 2 or not usable:
            raise ValueError("pairs need at least 2 speakers, one of them with 2 clips")
        self.bank, self.usable = bank, usable

    def sample(self, n_pairs: int, rng: np.random.Generator
               ) -> list[tuple[int, int, int, int, int]]:
        """``(speaker_a, clip_a, speaker_b, clip_b, same)`` tuples, half of them same-speaker."""
        if n_pairs < 2 or n_pairs % 2:
            raise ValueError(f"pairs per batch must be even and >= 2, got {n_pairs}")
        clips = self.bank.clips
        out = []
        for k in range(n_pairs):
            if k % 2 == 0:
                s = self.usable[rng.integers(len(self.usable))]
                i, j = rng.choice(len(clips[s]), 2, replace=False)
                out.append((s, int(i), s, int(j), 1))
            else:
                a, b = rng.choice(len(clips), 2, replace=False)
                out.append((int(a), int(rng.integers(len(clips[a]))), int(b),
                            int(rng.integers(len(clips[b]))), 0))
        order = rng.permutation(n_pairs)
        return [out[i] for i in order]


def ge2e_sample(bank: AudioBank, n_speakers: int, n_utts: int, rng: np.random.Generator
                ) -> list[list[tuple[int, int]]]:
    """N speakers x M distinct clips: ``[[(speaker, clip), ...], ...]``."""
    eligible = [i for i, c in enumerate(bank.clips) if len(c) >= n_utts]
    if len(eligible) < n_speakers:
        raise ValueError(f"GE2E batch needs {n_speakers} speakers with >= {n_utts} clips, "
                         f"the data has {len(eligible)}")
    chosen = rng.choice(eligible, n_speakers, replace=False)
    return [[(int(s), int(c)) for c in rng.choice(len(bank.clips[s]), n_utts, replace=False)]
            for s in chosen]


# -- validation ---------------------------------------------------------------------------------
class Validator:
    """EER on a trial list, embedding each file exactly as the runtime would (its windows come
    from :func:`training.data.runtime_windows`, computed once), but with the torch model; the
    trials are read, scored and measured by :mod:`rtverify.evaluation`, so the figure that
    selects a model is the one ``rtverify eval`` reports for the same embeddings (plain cosine: a
    candidate ships no score normalisation)."""

    def __init__(self, trials_path: str, root: str, features: FeatureConfig,
                 window: WindowConfig) -> None:
        try:
            self.trials = ev.read_trials(trials_path, root)
        except InputError as err:  # the training CLI reports ValueErrors in one line
            raise ValueError(str(err)) from None
        self.files = self.trials.files
        per_file = [runtime_windows(Path(root) / f, features, window) for f in self.files]
        owner = np.repeat(np.arange(len(self.files)), [len(w) for w, _ in per_file])
        flat = [w for ws, _ in per_file for w in ws]
        weight = np.concatenate([np.zeros(0)] + [wt for _, wt in per_file])
        self.has_speech = np.array([len(w) > 0 for w, _ in per_file])
        # windows are equally long unless the model leaves short segments unpadded: batch by length
        self.groups: list[tuple[np.ndarray, np.ndarray, torch.Tensor]] = []
        lengths = np.array([len(w) for w in flat])
        for n in np.unique(lengths):
            idx = np.flatnonzero(lengths == n)
            self.groups.append((owner[idx], weight[idx],
                                torch.from_numpy(np.stack([flat[i] for i in idx]))))
        self.name = Path(trials_path).stem

    @torch.no_grad()
    def embeddings(self, model: SpeakerEncoder, batch: int = 256) -> np.ndarray:
        """Unit embedding of each file: the normalised weighted sum of its window embeddings,
        pooled as the runtime pools them, float64 ``(n_files, dim)``; NaN rows for files without
        speech (no windows)."""
        model.eval()
        sums = None
        for owner, weight, wins in self.groups:
            emb = np.concatenate([model(wins[i:i + batch]).numpy()
                                  for i in range(0, len(wins), batch)])
            if sums is None:
                sums = np.zeros((len(self.files), emb.shape[1]))
            np.add.at(sums, owner, emb * weight[:, None])
        if sums is None:
            raise ValueError(f"{self.name}: no file of the validation list has speech")
        sums[~self.has_speech] = np.nan
        return sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-12)

    def measure(self, vectors: np.ndarray) -> dict:
        """The model-selection figures for file embeddings ``vectors`` (rows in the order of
        ``self.files``): :func:`rtverify.evaluation.score_trials` and
        :func:`rtverify.metrics.compute_metrics`, as in ``rtverify eval``."""
        scores = ev.score_trials(self.trials, vectors)
        m = compute_metrics(scores, self.trials.labels)
        return {"list": self.name, "eer": m.eer, "threshold_eer": m.threshold_eer,
                "min_dcf": m.min_dcf, "accuracy_at_eer": m.accuracy_at_eer,
                "accuracy_at_0": accuracy(scores, self.trials.labels, 0.0),
                "files_without_speech": int((~self.has_speech).sum())}

    def __call__(self, model: SpeakerEncoder) -> dict:
        return self.measure(self.embeddings(model))


class _Net(torch.nn.Module):
    """The encoder and the objective's parameters as one module, so that DDP reduces all of
    their gradients and sees every forward (``raw=True``: the raw embedding, for pairs)."""

    def __init__(self, model: SpeakerEncoder, loss_fn: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, x: torch.Tensor, raw: bool = False) -> torch.Tensor:
        return self.model.raw_embedding(x) if raw else self.model(x)


# -- the trainer --------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: Path | None = None, *,
                 utterances: Sequence[Utterance] | None = None, bank: AudioBank | None = None,
                 validator: Validator | None = None, quiet: bool = False) -> None:
        if cfg.objective not in ("pairs", "ge2e"):
            raise ValueError(f"objective must be 'pairs' or 'ge2e', got {cfg.objective!r}")
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else RUNS / cfg.name
        self.quiet = quiet
        torch.set_num_threads(max(1, cfg.threads))
        self.dist = distributed.setup(backend="gloo")  # computes on the CPU (no GPU path yet)
        torch.manual_seed(cfg.seed)  # the same initial model (and L2-SP anchor) on every rank
        self.rng = np.random.default_rng(distributed.rank_seed(cfg.seed, self.dist.rank))
        self.features, self.window = FeatureConfig(), WindowConfig()
        self.augment = cfg.augment_config()

        if bank is None:
            utts = list(utterances) if utterances is not None else \
                [u for spec in cfg.data for u in dataset(spec)]
            self._check_data(utts)
            bank = AudioBank.load(utts, progress=not quiet)
        self.bank = bank
        self.n_utterances = sum(len(c) for c in bank.clips)
        self.babble = [c for clips in bank.clips for c in clips]
        self.validator = validator
        if validator is None and cfg.val_trials:
            self.validator = Validator(cfg.val_trials, cfg.val_root, self.features, self.window)

        self.model = self._initial_model()
        self.anchor = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._teacher_model: SpeakerEncoder | None = None
        for name, p in self.model.lstm.named_parameters():
            if int(name.rsplit("_l", 1)[1]) < cfg.freeze_layers:
                p.requires_grad_(False)
        if cfg.objective == "ge2e":
            w, b = (10.0, -5.0)
            if cfg.init == "resemblyzer":
                from .transfer import resemblyzer_ge2e_scale

                w, b = resemblyzer_ge2e_scale()
            self.loss_fn: torch.nn.Module = GE2ELoss(w, b)
            self.sampler = None
        else:
            self.loss_fn = PairLoss()
            self.sampler = PairSampler(bank)
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += list(self.loss_fn.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.net = distributed.wrap(_Net(self.model, self.loss_fn), self.dist)
        if self.dist.world_size > 1:
            torch.manual_seed(distributed.rank_seed(cfg.seed, self.dist.rank))
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None

    def _check_data(self, utts: list[Utterance]) -> None:
        if not utts:
            raise ValueError("no training utterances")
        if self.cfg.val_trials:
            check_speakers(utts, trial_utterances(self.cfg.val_trials, self.cfg.val_root),
                           f"the validation trials {self.cfg.val_trials}")
        splits = arabic_splits()
        arabic = [u for u in dataset("arabic:test")]
        check_speakers(utts, arabic, "the Arabic test split")
        if self.cfg.objective == "ge2e" and not self.cfg.allow_calibration_speakers:
            check_speakers(utts, [u for u in dataset("arabic:calib6")],
                           "the calibration speakers (calib6: " + " ".join(splits["calib6"]) + ")")

    def _initial_model(self) -> SpeakerEncoder:
        if self.cfg.init == "resemblyzer":
            from .transfer import load_resemblyzer

            pretrained = load_resemblyzer(input_transform=self.cfg.input_transform)
            want = self.cfg.encoder_config()
            if dataclasses.replace(pretrained.cfg, level_target=want.level_target,
                                   level_ceiling=want.level_ceiling) != want:
                raise ValueError("--init resemblyzer needs layers 3, hidden 256, proj 256, relu")
            # the pretrained weights under this run's level setting
            return pretrained.with_level(want.level_target, want.level_ceiling)
        if self.cfg.init != "scratch":
            raise ValueError(f"init must be 'resemblyzer' or 'scratch', got {self.cfg.init!r}")
        return SpeakerEncoder(self.cfg.encoder_config())

    # -- one step ---------------------------------------------------------------------------
    def _clip(self, s: int, c: int) -> np.ndarray:
        clips = self.bank.clips[s]
        clip = clips[c]
        if self.cfg.p_concat and self.rng.random() < self.cfg.p_concat:
            need = (self.window.window_frames - 1) * self.features.hop_length
            parts = [clip]
            while sum(len(p) for p in parts) < need:
                parts.append(clips[self.rng.integers(len(clips))])
            clip = np.concatenate(parts)
        return clip

    def _windows(self, picks: list[tuple[int, int]]) -> torch.Tensor:
        wins = [clip_window(self._clip(s, c), self.rng, augment_cfg=self.augment,
                            features=self.features, window=self.window, babble_pool=self.babble)
                for s, c in picks]
        return torch.from_numpy(np.stack(wins))

    def _teacher(self) -> SpeakerEncoder:
        if self._teacher_model is None:
            teacher = SpeakerEncoder(self.model.cfg)
            teacher.load_state_dict(self.anchor, strict=True)
            self._teacher_model = teacher.eval().requires_grad_(False)
        return self._teacher_model

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        t = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * t))
        return c.lr * (c.lr_final_ratio + (1 - c.lr_final_ratio) * cosine)

    def train_step(self) -> dict:
        c = self.cfg
        self.model.train()
        if c.objective == "ge2e":
            groups = ge2e_sample(self.bank, c.speakers_per_batch, c.utterances_per_speaker,
                                 self.rng)
            x = self._windows([p for g in groups for p in g])
            emb = self.net(x).reshape(c.speakers_per_batch, c.utterances_per_speaker, -1)
            loss = self.loss_fn(emb)
            extra = {"w": float(self.loss_fn.w.detach()), "b": float(self.loss_fn.b.detach())}
            if c.distill:
                with torch.no_grad():
                    target = self._teacher()(x)
                drift = (1 - (emb.reshape(len(x), -1) * target).sum(dim=1)).mean()
                extra["drift"] = float(drift.detach())
        else:
            pairs = self.sampler.sample(c.pairs_per_batch, self.rng)
            x = self._windows([(a, i) for a, i, _, _, _ in pairs]
                              + [(b, j) for _, _, b, j, _ in pairs])
            raw = self.net(x, raw=True)
            a, b = raw[: len(pairs)], raw[len(pairs):]
            same = torch.tensor([p[4] for p in pairs], dtype=torch.float32)
            loss = self.loss_fn(a, b, same)
            acc = ((PairLoss.logits(a, b) > 0).float() == same).float().mean()
            extra = {"pair_acc": float(acc.detach())}
        total = loss
        if c.distill and c.objective == "ge2e":
            total = total + c.distill * drift
        if c.l2sp:
            total = total + c.l2sp * sum(((p - self.anchor[n]) ** 2).sum()
                                         for n, p in self.model.named_parameters()
                                         if p.requires_grad)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.opt.param_groups for p in g["params"]], c.grad_clip)
        self.opt.step()
        self.step += 1
        return {"step": self.step, "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                "lr": self.lr_at(self.step - 1), **extra}

    # -- checkpoints ------------------------------------------------------------------------
    def state(self, rng_ranks: list | None = None) -> dict[str, Any]:
        return {"rng_ranks": rng_ranks, "world_size": self.dist.world_size,"step": self.step, "objective": self.cfg.objective, "config": self.cfg.to_dict(),
                "encoder": self.model.cfg.to_dict(), "features": self.features.to_dict(),
                "model": self.model.state_dict(), "loss": self.loss_fn.state_dict(),
                "optimizer": self.opt.state_dict(), "anchor": self.anchor,
                "rng": ckpt_io.rng_state(self.rng), "history": self.history, "best": self.best,
                "data": {"specs": list(self.cfg.data), "speakers": list(self.bank.speakers),
                         "utterances": self.n_utterances,
                         "val": Path(self.cfg.val_trials).name if self.cfg.val_trials else None}}

    def save(self, path: Path) -> None:
        """Write a checkpoint (rank 0 only; a no-op on the other ranks)."""
        if self.dist.is_main:
            ckpt_io.save(path, self.state())

    def save_last(self, path: Path) -> None:
        """``last.pt`` with every rank's generator state; every rank must call it."""
        ranks = distributed.gather_object(ckpt_io.rng_state(self.rng))
        if self.dist.is_main:
            ckpt_io.save(path, self.state(ranks))
        distributed.barrier()

    def resume(self, path: Path) -> None:
        state = ckpt_io.load(path)
        saved = TrainConfig.from_dict(state["config"])
        for key in ("objective", "init", "layers", "hidden", "proj", "relu", "input_transform",
                    "level_dbfs", "level_two_sided", "reverse_time", "seed", "data"):
            if getattr(saved, key) != getattr(self.cfg, key):
                raise ValueError(f"{path}: checkpoint has {key}={getattr(saved, key)!r}, this run "
                                 f"{getattr(self.cfg, key)!r}")
        self.model.load_state_dict(state["model"], strict=True)
        self.loss_fn.load_state_dict(state["loss"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.anchor = state["anchor"]
        self._teacher_model = None
        ranks = state.get("rng_ranks")
        if ranks and len(ranks) == self.dist.world_size:
            ckpt_io.restore_rng(ranks[self.dist.rank], self.rng)
        elif self.dist.world_size == 1:
            ckpt_io.restore_rng(state["rng"], self.rng)
        else:  # another number of processes than the checkpoint's: new, distinct streams
            self.rng = np.random.default_rng([self.cfg.seed, self.dist.rank, state["step"]])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]

    # -- the loop ---------------------------------------------------------------------------
    def validate(self) -> dict | None:
        if self.validator is None or not self.dist.is_main:
            return None
        t = time.perf_counter()
        result = {"step": self.step, **self.validator(self.model),
                  "val_s": round(time.perf_counter() - t, 1)}
        self.history.append({"val": result})
        if self.best is None or result["eer"] < self.best["eer"]:
            self.best = result
            self.save(self.out / "best.pt")
        return result

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def run(self, on_step: Callable[[dict], None] | None = None, until: int | None = None
            ) -> list[dict]:
        """Train until ``cfg.steps`` (or stop early after step ``until``, saving ``last.pt``, as an
        interruption would); returns the per-step records of this call."""
        c = self.cfg
        stop = c.steps if until is None else min(until, c.steps)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        records: list[dict] = []
        if self.step == 0 and self.validator is not None and c.eval_every:
            self._log({"val": self.validate()})
        progress = None
        if not self.quiet and self.dist.is_main:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
                TimeRemainingColumn

            progress = Progress(TextColumn(f"[bold]{c.name}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            task = progress.add_task("train", total=c.steps, completed=self.step, info="")
            progress.start()
        try:
            t0 = time.perf_counter()
            while self.step < stop:
                rec = self.train_step()
                rec["elapsed_s"] = round(time.perf_counter() - t0, 1)
                records.append(rec)
                self.history.append({k: rec[k] for k in ("step", "loss")})
                self._log(rec)
                if on_step is not None:
                    on_step(rec)
                if c.eval_every and self.step % c.eval_every == 0:
                    val = self.validate()
                    if val is not None:
                        self._log({"val": val})
                        logger.info("step %d: val %s EER %.2f %%", self.step, val["list"],
                                    100 * val["eer"])
                if (c.ckpt_every and self.step % c.ckpt_every == 0) or self.step == stop:
                    self.save_last(self.out / "last.pt")
                if progress is not None:
                    info = f"loss {rec['loss']:.3f}"
                    if self.best:
                        info += f"  best val EER {100 * self.best['eer']:.2f} %"
                    progress.update(task, completed=self.step, info=info)
        finally:
            if progress is not None:
                progress.stop()
        return records
