"""Training checkpoints: plain dicts of tensors and Python values, written atomically and read
back with ``torch.load(weights_only=True)`` (no arbitrary pickled objects).

A checkpoint holds ``format``, ``step``, ``objective``, ``config`` (the run's settings),
``encoder`` (the :class:`~training.model.EncoderConfig`), ``model``, ``loss`` (the objective's
own parameters, e.g. GE2E's scale), ``optimizer``, ``anchor`` (the initial weights, for the
L2-SP penalty), ``rng`` (numpy, torch and Python generator states), ``history`` (metrics so far),
``best`` (the best validation result) and ``data`` (what it was trained on).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import EncoderConfig, SpeakerEncoder

FORMAT = "rtverify-train/1"


def rng_state(rng: np.random.Generator) -> dict:
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(),
            "python": random.getstate()}


def restore_rng(state: dict, rng: np.random.Generator) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def write(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` of ``obj`` to ``path``, atomic and durable: a temporary file beside it,
    fsynced, renamed over it, the folder fsynced. A crash at any moment (a killed process, or
    the machine's: without the fsyncs the rename can reach the disk before the data) leaves the
    previous file or the new one, never half or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def save(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    """Write a training checkpoint ``ckpt`` to ``path`` (:func:`write`)."""
    write(path, {"format": FORMAT, **ckpt})


def read(path: str | os.PathLike, *, weights_only: bool = True) -> Any:
    """``torch.load`` of a checkpoint file; a missing, truncated, empty or non-torch file is a
    FileNotFoundError or ValueError naming it (not whatever the unpickler happens to raise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # RuntimeError, UnpicklingError, EOFError, KeyError, ...
        raise ValueError(f"{path}: not a readable checkpoint (truncated, or not written by "
                         f"torch.save: {type(err).__name__})") from None


def load(path: str | os.PathLike) -> dict[str, Any]:
    ckpt = read(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = (": a training.distill checkpoint, exported by python -m training.distill "
                "--out ITS_FOLDER --export NAME" if isinstance(ckpt, dict) and "student" in ckpt
                else "")
        raise ValueError(f"{path}: not an rtverify training checkpoint "
                         f"(format {ckpt.get('format') if isinstance(ckpt, dict) else None!r})"
                         + hint)
    return ckpt


def load_distilled(path: str | os.PathLike) -> dict[str, Any]:
    """A ``training.distill`` checkpoint (``<out>/last.pt``, or a ``training.soup`` of several):
    a dict with the ``student``'s weights."""
    ckpt = read(path, weights_only=False)
    if not isinstance(ckpt, dict) or "student" not in ckpt:
        hint = (": a python -m training checkpoint, exported by python -m export --checkpoint"
                if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT else "")
        raise ValueError(f"{path}: not a training.distill checkpoint (no student){hint}")
    return ckpt


def encoder_from(ckpt: dict[str, Any]) -> SpeakerEncoder:
    model = SpeakerEncoder(EncoderConfig(**ckpt["encoder"]))
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def load_for_export(path: str | os.PathLike) -> tuple[SpeakerEncoder, dict]:
    """The encoder of a checkpoint and what its sidecar should record about it."""
    from rtverify.config import FeatureConfig

    ckpt = load(path)
    model = encoder_from(ckpt)
    cfg = ckpt["config"]
    training = {
        "objective": ckpt["objective"],
        "init": cfg.get("init"),
        "data": ckpt["data"]["specs"],
        "speakers": ckpt["data"]["speakers"],
        "utterances": ckpt["data"]["utterances"],
        "steps": ckpt["step"],
        "seed": cfg.get("seed"),
        "selected_on": ckpt["data"].get("val"),
        "validation": ckpt.get("best"),
        "checkpoint": Path(path).name,
        "settings": {k: cfg[k] for k in ("lr", "augment", "p_concat", "distill", "l2sp",
                                         "freeze_layers", "speakers_per_batch",
                                         "utterances_per_speaker", "pairs_per_batch")
                     if k in cfg},
    }
    extra: dict[str, Any] = {"training": training, "encoder": model.cfg.to_dict(),
                             "features": ckpt.get("features", FeatureConfig().to_dict())}
    if cfg.get("init") == "resemblyzer":
        from .transfer import ATTRIBUTION

        extra["attribution"] = ATTRIBUTION
    return model, extra
