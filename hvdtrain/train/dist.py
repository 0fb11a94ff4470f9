"""The collective operations training needs, and the only module that imports Horovod.

``init_dist`` picks Horovod when an MPI or Horovod launcher started this process and a
single-process stand-in otherwise, so the loop, data and checkpoint code run (and test)
without MPI. Distributed lines are marked ``# Horovod:``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from hvdtrain.job.ranks import launched_by_launcher
from hvdtrain.train.buckets import GradientBuckets, bucketed
from hvdtrain.train.config import DEFAULT_BUCKET_MB
from hvdtrain.train.steps import StepEnd

T = TypeVar("T")


@dataclass(frozen=True)
class ReduceOptions:
    """How gradients are combined: ``--compression``, ``--op`` and ``--accumulate``."""

    compression: str = "none"  # "fp16": halve the bytes on the wire
    op: str = "average"  # or "adasum"
    backward_passes_per_step: int = 1
    bucket_mb: float = DEFAULT_BUCKET_MB  # 0: one all-reduce per gradient tensor

    @property
    def bucketed(self) -> bool:
        """Adasum combines each tensor on its own, so it always goes tensor by tensor."""
        return self.bucket_mb > 0 and self.op != "adasum"


class Dist(Protocol):
    """Rank layout and the collectives of one training job."""

    @property
    def rank(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def local_rank(self) -> int: ...
    @property
    def local_size(self) -> int: ...
    @property
    def cross_rank(self) -> int: ...
    @property
    def cross_size(self) -> int: ...

    def allreduce_sum(self, values: torch.Tensor, name: str) -> torch.Tensor: ...
    def allgather_object(self, obj: T) -> list[T]: ...
    def broadcast_object(self, obj: T) -> T: ...
    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module,
                       options: ReduceOptions) -> torch.optim.Optimizer: ...
    def synchronize(self, optimizer: torch.optim.Optimizer) -> None: ...
    def skip_synchronize(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[None]: ...


@dataclass(frozen=True)
class LocalDist:
    """World size 1: every collective is the identity."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    cross_rank: int = 0
    cross_size: int = 1

    def allreduce_sum(self, values: torch.Tensor, name: str) -> torch.Tensor:
        return values

    def allgather_object(self, obj: T) -> list[T]:
        return [obj]

    def broadcast_object(self, obj: T) -> T:
        return obj

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        return None

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module,
                       options: ReduceOptions) -> torch.optim.Optimizer:
        return optimizer

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        return None

    def skip_synchronize(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class HorovodDist:
    """Collectives through Horovod (MPI or Gloo underneath, as Horovod was started)."""

    def __init__(self, hvd: ModuleType) -> None:
        self._hvd = hvd

    @property
    def rank(self) -> int:
        return int(self._hvd.rank())

    @property
    def size(self) -> int:
        return int(self._hvd.size())

    @property
    def local_rank(self) -> int:
        return int(self._hvd.local_rank())

    @property
    def local_size(self) -> int:
        return int(self._hvd.local_size())

    @property
    def cross_rank(self) -> int:
        return int(self._hvd.cross_rank())

    @property
    def cross_size(self) -> int:
        return int(self._hvd.cross_size())

    def allreduce_sum(self, values: torch.Tensor, name: str) -> torch.Tensor:
        # Horovod: exact sums (not averages) so uneven shards combine like one process.
        return self._hvd.allreduce(values, op=self._hvd.Sum, name=name)  # type: ignore[no-any-return]

    def allgather_object(self, obj: T) -> list[T]:
        return self._hvd.allgather_object(obj)  # type: ignore[no-any-return]  # Horovod

    def broadcast_object(self, obj: T) -> T:
        return self._hvd.broadcast_object(obj, root_rank=0)  # type: ignore[no-any-return]  # Horovod

    def broadcast_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # Horovod: every replica starts from rank 0's parameters and optimizer state.
        self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        with steps_without_reducing(optimizer):
            self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module,
                       options: ReduceOptions) -> torch.optim.Optimizer:
        # Horovod: gradients are ring-all-reduced (averaged) before each step, a bucket or a
        # tensor at a time; with backward_passes_per_step=K, only after every K-th backward pass.
        hvd = self._hvd
        compression = hvd.Compression.fp16 if options.compression == "fp16" else hvd.Compression.none
        if options.bucketed:
            return bucketed(optimizer, hvd, options.bucket_mb, compression, options.backward_passes_per_step)
        wrapped: Any = hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), compression=compression,
            op=hvd.Adasum if options.op == "adasum" else hvd.Average,
            backward_passes_per_step=options.backward_passes_per_step)
        return wrapped  # type: ignore[no-any-return]

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.synchronize()  # type: ignore[attr-defined]  # Horovod: finish the all-reduce now

    def skip_synchronize(self, optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[None]:
        return optimizer.skip_synchronize()  # type: ignore[attr-defined,no-any-return]  # Horovod


def steps_without_reducing(optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager[None]:
    """Around Horovod's broadcast of optimizer state. A rank whose optimizer has no state yet (every
    rank but 0 on resume, a worker that joins an elastic job) makes one step with zero gradients to
    create it, and that step must not all-reduce: the ranks that have state make none. Horovod's
    broadcast spares only its own optimizer classes this; gradient buckets skip it here."""
    return optimizer.skip_synchronize() if isinstance(optimizer, GradientBuckets) else contextlib.nullcontext()


def init_dist(env: Mapping[str, str]) -> Dist:
    """Horovod when a launcher started us, else the single-process stand-in."""
    if not launched_by_launcher(env):
        return LocalDist()
    import horovod.torch as hvd

    hvd.init()  # Horovod: join the job's ranks
    return HorovodDist(hvd)


class ElasticHooks:
    """What the loop tells Horovod's elastic state: samples done, and when to commit."""

    def __init__(self, state: Any, sampler: Any, commit_every: int) -> None:
        self.state = state
        self.sampler = sampler
        self.commit_every = commit_every
        self.steps = 0

    def __call__(self, end: StepEnd) -> None:
        """A step callback: tell the sampler what this rank took, and commit every so often."""
        self.sampler.record_batch(self.steps, end.samples)
        self.steps += 1
        if self.steps % self.commit_every == 0:
            self.state.commit()  # Horovod: a point to roll back to if a worker is lost

    def end_epoch(self, epochs_done: int) -> None:
        self.state.epoch = epochs_done
        self.sampler.set_epoch(epochs_done)
        self.state.commit()


def elastic_sampler(dataset: Any, shuffle: bool, seed: int) -> Any:
    """A sampler that re-shards the epoch's remaining samples when the world changes."""
    from horovod.torch.elastic import ElasticSampler

    return ElasticSampler(dataset, shuffle=shuffle, seed=seed)


def run_elastic(model: nn.Module, optimizer: torch.optim.Optimizer, sampler: Any, start_epoch: int,
                commit_every: int, body: Any, on_reset: Any) -> Any:
    """Run ``body(start_epoch, hooks)`` under Horovod elastic: when a worker is lost (or added), the
    survivors roll back to the last commit, re-form the world, call ``on_reset`` and run ``body``
    again from the committed epoch."""
    import horovod.torch as hvd

    class State(hvd.elastic.TorchState):  # type: ignore[misc]
        def sync(self) -> None:
            with steps_without_reducing(optimizer):
                super().sync()

    state = State(model=model, optimizer=optimizer, train_sampler=sampler, epoch=start_epoch)
    state.register_reset_callbacks([on_reset])
    hooks = ElasticHooks(state, sampler, commit_every)

    @hvd.elastic.run  # type: ignore[untyped-decorator]
    def train(state: Any) -> Any:
        return body(state.epoch, hooks)

    return train(state)
