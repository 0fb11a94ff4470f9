"""A small Python API for people who keep their own training script.

    import hvdtrain
    ctx = hvdtrain.setup()                                   # init, stop signals, threads, device
    loader = hvdtrain.shard(train_set, batch_size=32)        # this rank's shard
    optimizer = hvdtrain.wrap_optimizer(optimizer, model)    # all-reduce + broadcast from rank 0
    run = hvdtrain.Run("runs/exp1", model=model, optimizer=optimizer)  # checkpoints, preemption, metrics
    if hvdtrain.is_root(): print(...)                        # log and save on rank 0 only

Under ``hvdtrain run`` (or mpirun, srun, horovodrun) this is Horovod; alone it is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from hvdtrain.errors import HvdtrainError
from hvdtrain.logs import show_log
from hvdtrain.run.preempt import catch_stop_signals
from hvdtrain.run.run import Run
from hvdtrain.train.config import DEFAULT_BUCKET_MB, choose_device, claim_cores, detect_gpus
from hvdtrain.train.dist import Dist, ReduceOptions, init_dist

__all__ = ["Context", "Run", "average", "current_dist", "is_root", "setup", "shard", "wrap_optimizer"]


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int
    size: int
    local_rank: int
    device: torch.device
    dist: Dist


_context: list[Context] = []  # set once by setup(), like hvd.init()


def setup(device: str = "auto", threads: int | None = None) -> Context:
    """Catch the stop signals (Slurm's warning before the time limit or a preemption, which
    ``hvdtrain.Run`` acts on), join the job (Horovod when a launcher started us), bind to this
    rank's cores when ``hvdtrain run`` asked for it, set torch threads, pick the device."""
    if _context:
        return _context[0]
    catch_stop_signals(os.environ)
    show_log()
    dist = init_dist(os.environ)
    chosen = torch.device(choose_device(device, detect_gpus(os.environ), dist.local_rank, dist.local_size))
    claim_cores(os.environ, threads, dist, str(chosen))
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    _context.append(Context(dist.rank, dist.size, dist.local_rank, chosen, dist))
    return _context[0]


def _current() -> Context:
    if not _context:
        raise HvdtrainError("hvdtrain.setup() has not been called", "call hvdtrain.setup() first")
    return _context[0]


def current_dist() -> Dist:
    """The job's collectives: ``setup()``'s, else Horovod's when a launcher started this process (a
    Horovod script that called ``hvd.init()`` itself), else the single-process stand-in."""
    return _context[0].dist if _context else init_dist(os.environ)


def is_root() -> bool:
    """True on rank 0: the one rank that logs and saves."""
    return _current().rank == 0


def shard(dataset: Dataset[Any], batch_size: int, shuffle: bool = True, seed: int = 0,
          **loader_args: Any) -> DataLoader[Any]:
    """A DataLoader over this rank's shard; call ``loader.sampler.set_epoch(epoch)`` each epoch.
    The last partial batch is dropped so every rank takes the same number of equal steps."""
    ctx = _current()
    sampler: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=ctx.size, rank=ctx.rank,
                                                          shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **loader_args)


def wrap_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, compression: str = "none",
                   op: str = "average", accumulate: int = 1,
                   bucket_mb: float = DEFAULT_BUCKET_MB) -> torch.optim.Optimizer:
    """Average gradients across ranks at each step (in buckets of up to ``bucket_mb`` MiB; 0 for
    one all-reduce per tensor), and start every rank from rank 0's model and optimizer state."""
    ctx = _current()
    wrapped = ctx.dist.wrap_optimizer(optimizer, model, ReduceOptions(compression, op, accumulate, bucket_mb))
    ctx.dist.broadcast_state(model, wrapped)
    return wrapped


def average(value: float) -> float:
    """The mean of a number over all ranks (for logging a metric)."""
    ctx = _current()
    total = ctx.dist.allreduce_sum(torch.tensor([value], dtype=torch.float64), name="hvdtrain.average")
    return float(total.item()) / ctx.size
