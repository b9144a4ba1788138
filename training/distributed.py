"""Multi-process training under ``torchrun`` (DistributedDataParallel), one script for all scales.

A training script calls :func:`setup` once. Run plainly (``python -m training.distill ...``) there
are no torchrun variables, nothing is initialised and everything behaves as a single process
(rank 0 of 1). Under ``torchrun --nproc_per_node N -m training.distill ...`` (or several nodes with
``--nnodes``/``--rdzv-endpoint``) it initialises the process group from torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): backend ``nccl`` with one GPU
per process when CUDA is available, ``gloo`` on CPU.

Conventions the scripts follow:

* ``--batch`` is per process; one optimiser step sees ``batch x world_size`` samples, and DDP
  averages the gradients (so the step equals a single-process step on the union of the batches,
  for a loss that is a mean over equal-sized per-rank batches; ``tests/test_ddp.py`` checks it).
* Every rank draws its own batches from its own generator (:func:`rank_seed`); rank 0 keeps the
  single-process seed, so a 1-process run is unchanged.
* Only rank 0 writes logs, caches, checkpoints and exports (:func:`is_main`); the other ranks wait
  at :func:`barrier` where they need what rank 0 wrote. All ranks load the same checkpoint on
  resume; each rank's generator state is gathered into it (:func:`gather_object`).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(backend: str | None = None) -> Dist:
    """Initialise the process group when started by torchrun; a single process otherwise."""
    if not launched_by_torchrun():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda and backend == "nccl":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        # long timeout: the other ranks may wait while rank 0 builds a cache
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=timedelta(hours=3))
    return Dist(rank, world, local, device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> None:
    """End the process with ``code``. A torchrun worker whose work is done and written ends at
    once (``os._exit``, after flushing stdout and stderr): with torch 2.13 and gloo, a worker's
    normal interpreter teardown aborts now and then ("terminate called without an active
    exception", in C++ destructors after ``destroy_process_group``), and torchrun then reports
    the whole run failed although every file was written (measured: 1 run in 12 of a two-rank
    job). A single process exits normally."""
    if launched_by_torchrun():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed`` (single-process runs unchanged); rank r draws from ``seed + 1000 r``."""
    return seed + 1000 * rank


def wrap(module: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when there is more than one process, else as is.
    DDP broadcasts rank 0's parameters at construction, so all ranks start identical."""
    if d.world_size <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    if d.device.type == "cuda":
        return DDP(module.to(d.device), device_ids=[d.device.index])
    return DDP(module)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def gather_object(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_scalar(x: float, d: Dist) -> float:
    """The mean of a float over the ranks (for logging)."""
    if d.world_size <= 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.item() / d.world_size
