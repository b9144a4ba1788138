"""Training under torchrun: two CPU processes (gloo) through training.distributed and distill.

The file is also the worker torchrun starts (``python -m torch.distributed.run --nproc_per_node 2
tests/test_ddp.py MODE OUT``): each rank writes what it saw under OUT and the tests compare.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_teachers

ROOT = Path(__file__).resolve().parents[1]
BATCH, DIM = 6, 5


def _tiny_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(DIM, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _rank_batch(rank: int):
    import torch

    from training.distributed import rank_seed

    g = np.random.default_rng(rank_seed(3, rank))
    x = g.standard_normal((BATCH, DIM)).astype(np.float32)
    y = g.standard_normal((BATCH, 1)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def _digest(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _worker(mode: str, out: Path) -> None:
    import torch

    from training import distributed

    torch.set_num_threads(1)
    if mode == "grad":
        d = distributed.setup()
        assert d.world_size == 2, d
        net = _tiny_model()
        if d.rank == 1:  # DDP must broadcast rank 0's initial weights
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(1.0)
        model = distributed.wrap(net, d)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for step in range(3):
            x, y = _rank_batch(d.rank) if step == 0 else _rank_batch(d.rank + 10 * step)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if step == 0:
                torch.save({k: p.grad.clone() for k, p in net.named_parameters()},
                           out / f"grad-{d.rank}.pt")
            opt.step()
        (out / f"digest-{d.rank}.txt").write_text(_digest(net))
        distributed.cleanup()
    elif mode == "distill":
        from training import distill

        argv = sys.argv[3:]
        args = distill.parse_args(argv)
        net = distill.train(args)
        rank = int(os.environ["RANK"])
        (out / f"digest-{rank}.txt").write_text(_digest(net))
        distributed.cleanup()
    elif mode == "trainer":
        from training.train import Trainer

        trainer = Trainer(_trainer_config(int(sys.argv[3])), out, bank=_bank(), quiet=True)
        if (out / "last.pt").is_file():
            trainer.resume(out / "last.pt")
        trainer.run()
        (out / f"digest-{trainer.dist.rank}.txt").write_text(
            _digest(trainer.model) + _digest(trainer.loss_fn))
        distributed.cleanup()


def _bank():
    from training.data import AudioBank

    g = np.random.default_rng(0)
    t = np.arange(12000) / 16000
    return AudioBank.from_arrays({
        f"spk{k}": [(0.2 * np.sin(2 * np.pi * (120 + 50 * k) * g.uniform(0.95, 1.05) * t)
                     + 0.01 * g.standard_normal(len(t))).astype(np.float32) for _ in range(4)]
        for k in range(4)})


def _trainer_config(steps: int):
    from training.train import TrainConfig

    return TrainConfig(objective="ge2e", layers=1, hidden=16, proj=8, relu=False,
                       input_transform="logcmn", init="scratch", val_trials="", eval_every=0,
                       ckpt_every=1, threads=1, steps=steps, lr=1e-2, augment="default",
                       speakers_per_batch=3, utterances_per_speaker=2, l2sp=1e-3)


def _torchrun(tmp_path: Path, *args: str, timeout: float = 120) -> None:
    # CPU processes (gloo) even on a machine with GPUs: two ranks cannot share one GPU under nccl
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(Path(__file__).resolve()), *args]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gradient_is_the_union_gradient(tmp_path):
    torch = pytest.importorskip("torch")
    _torchrun(tmp_path, "grad", str(tmp_path))
    g0, g1 = (torch.load(tmp_path / f"grad-{r}.pt") for r in (0, 1))
    # the single-process gradient of the same model on both ranks' batches together
    net = _tiny_model()
    (x0, y0), (x1, y1) = _rank_batch(0), _rank_batch(1)
    torch.nn.functional.mse_loss(net(torch.cat([x0, x1])), torch.cat([y0, y1])).backward()
    union = dict(net.named_parameters())
    local0 = _tiny_model()
    torch.nn.functional.mse_loss(local0(x0), y0).backward()
    for k, p in union.items():
        assert torch.allclose(g0[k], p.grad, atol=1e-6), k
        assert torch.allclose(g1[k], p.grad, atol=1e-6), k
    # and not merely rank 0's own gradient: the ranks saw different batches
    assert not all(torch.allclose(g0[k], p.grad, atol=1e-4)
                   for k, p in local0.named_parameters())
    d0, d1 = ((tmp_path / f"digest-{r}.txt").read_text() for r in (0, 1))
    assert d0 == d1  # parameters stay identical across ranks after the steps


def _in_sync_after(out, steps: int, *, weights_only: bool):
    """Both ranks' digests equal, the checkpoint at ``steps`` from 2 processes whose random
    streams differ; returns rank 0's digest and the checkpoint."""
    import torch

    d0, d1 = ((out / f"digest-{r}.txt").read_text() for r in (0, 1))
    assert d0 == d1, "the ranks' models diverged"
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=weights_only)
    assert state["step"] == steps and state["world_size"] == 2
    r0, r1 = state["rng_ranks"]
    assert r0["numpy"] != r1["numpy"], "both ranks drew the same batches"
    return d0, state


def test_distill_under_torchrun_writes_once_and_resumes(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = tmp_path / "run"
    synthetic_teachers(out)
    common = ["--out", str(out), "--batch", "2", "--ckpt-every", "1", "--p-clean", "0.5"]
    _torchrun(tmp_path, "distill", str(out), *common, "--steps", "2")
    d0, state = _in_sync_after(out, 2, weights_only=False)
    assert not list(out.glob("*.tmp"))
    log = (out / "log.txt").read_text()
    assert log.count("effective batch 4") == 1 and log.count("done") == 1, log  # rank 0 only
    first = state["student"]
    # resume: both ranks load last.pt and go on to step 3
    _torchrun(tmp_path, "distill", str(out), *common, "--steps", "3")
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 3
    assert "resumed at step 2" in (out / "log.txt").read_text()
    assert (out / "digest-0.txt").read_text() == (out / "digest-1.txt").read_text()
    assert (out / "digest-0.txt").read_text() != d0  # it trained on from the checkpoint
    assert any(not torch.equal(first[k], state["student"][k]) for k in first)


def test_encoder_trainer_under_torchrun_stays_in_sync_and_resumes(tmp_path):
    torch = pytest.importorskip("torch")
    out = tmp_path / "run"
    _torchrun(tmp_path, "trainer", str(out), "3")
    d0, state = _in_sync_after(out, 3, weights_only=True)
    steps = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in ln]
    assert len(steps) == 3, steps  # rank 0 logs, once per step
    _torchrun(tmp_path, "trainer", str(out), "5")  # resumes from last.pt on both ranks
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 5
    e0, e1 = ((out / f"digest-{r}.txt").read_text() for r in (0, 1))
    assert e0 == e1 and e0 != d0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _worker(sys.argv[1], Path(sys.argv[2]))
    from training.distributed import exit_process

    exit_process(0)  # as the training scripts end under torchrun
