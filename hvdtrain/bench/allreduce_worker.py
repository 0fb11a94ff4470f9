"""One rank of ``hvdtrain bench allreduce`` for one backend (started by ``hvdtrain run``).

Each backend runs in its own job, so Horovod's background thread never runs while raw MPI or
gloo is timed. Every all-reduce result is checked; the time of a size is the slowest rank's.

``paired`` is the exception: Horovod Sum and raw MPI in one job, timed in alternating blocks, so
that both see the same state of the machine. On the 2-core VM, raw MPI's own time at 64 KiB and
1 MiB has two levels about 2x and 5x apart, which hold for a whole job and often for several
(docs/performance.md, "This machine's phases"); jobs of their own can draw different levels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from hvdtrain.bench.allreduce import PAIRED
from hvdtrain.bench.gloo import leave_and_exit
from hvdtrain.job.cores import bind_rank
from hvdtrain.job.ranks import rank_from_env, size_from_env

GROUPED_TENSORS = 64  # the grouped backend splits each size into this many tensors
PAIRED_BLOCKS = 6
# Horovod's background thread keeps polling for 100 ms after its last collective
# (wait-without-spinning.patch); each block starts after a longer pause, so raw MPI is timed while
# that thread sleeps, and Horovod from the same idle start as in its own job's first call.
PAIRED_PAUSE_S = 0.15


def iterations(nbytes: int) -> int:
    """More repetitions for small messages, whose times are short and noisy."""
    return max(5, min(200, int(5e7 // max(nbytes, 1))))


class Backend:
    """allreduce(tensor) -> reduced tensor, barrier(), and max_over_ranks(seconds)."""

    def __init__(self, name: str, master: str) -> None:
        self.name = name
        if name.startswith("horovod"):
            import horovod.torch as hvd

            hvd.init()
            self.hvd, self.rank, self.size = hvd, hvd.rank(), hvd.size()
        elif name == "mpi":
            from mpi4py import MPI

            self.comm, self.mpi = MPI.COMM_WORLD, MPI
            self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        else:
            import torch.distributed as dist

            self.rank, self.size = rank_from_env(os.environ), size_from_env(os.environ)
            dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=self.rank, world_size=self.size)
            self.dist = dist

    def expected(self) -> float:
        """Every rank contributes rank + 1: the sum, or for Average the mean, of 1..size."""
        total = float(self.size * (self.size + 1) / 2)
        return total / self.size if self.name == "horovod_avg" else total

    def allreduce(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Reduce ``tensor`` in place, as training reduces gradients, and return its parts (checked
        outside the timing). Every backend works in place, so none pays for a new output tensor."""
        # Horovod: the in-place calls DistributedOptimizer makes (allreduce_async_ + synchronize),
        # with one name per size, as it names each gradient, so repeated all-reduces hit Horovod's
        # response cache and skip the full negotiation, as in training.
        name = f"bench.{tensor.numel()}"
        if self.name == "horovod_sum":
            return [self.hvd.allreduce_(tensor, op=self.hvd.Sum, name=name)]
        if self.name == "horovod_avg":
            return [self.hvd.allreduce_(tensor, op=self.hvd.Average, name=name)]
        if self.name == "horovod_grouped":
            return list(self.hvd.grouped_allreduce_(list(tensor.chunk(GROUPED_TENSORS)), op=self.hvd.Sum, name=name))
        if self.name == "mpi":
            self.comm.Allreduce(self.mpi.IN_PLACE, tensor.numpy(), op=self.mpi.SUM)
            return [tensor]
        self.dist.all_reduce(tensor)
        return [tensor]

    def barrier(self) -> None:
        if self.name.startswith("horovod"):
            self.hvd.barrier()
        elif self.name == "mpi":
            self.comm.Barrier()
        else:
            self.dist.barrier()

    def max_over_ranks(self, seconds: float) -> float:
        if self.name.startswith("horovod"):
            return float(self.hvd.allreduce(torch.tensor([seconds]), op=self.hvd.Max, name="bench.max").item())
        if self.name == "mpi":
            return float(self.comm.allreduce(seconds, op=self.mpi.MAX))
        value = torch.tensor([seconds])
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX)
        return float(value.item())


def samples(backend: Backend, nbytes: int, count: int) -> list[float]:
    """Seconds of ``count`` all-reduces of ``nbytes`` on this rank, each result verified."""
    elements = max(GROUPED_TENSORS, nbytes // 4)
    expected = backend.expected()
    times = []
    for _ in range(count):
        tensor = torch.full((elements,), float(backend.rank + 1))
        backend.barrier()
        start = time.perf_counter()
        result = backend.allreduce(tensor)
        times.append(time.perf_counter() - start)
        if not all(torch.allclose(part, torch.full_like(part, expected)) for part in result):
            raise RuntimeError(f"{backend.name}: wrong all-reduce result at {nbytes} bytes")
    return times


def time_size(backend: Backend, nbytes: int, warmup: int = 3) -> float:
    """Median seconds of one all-reduce of ``nbytes`` (the slowest rank's), result verified."""
    times = samples(backend, nbytes, warmup + iterations(nbytes))[warmup:]
    return backend.max_over_ranks(statistics.median(times))


def time_paired(horovod: Backend, mpi: Backend, nbytes: int, pause_s: float = PAIRED_PAUSE_S,
                warmup: int = 2) -> tuple[float, float]:
    """(Horovod's, raw MPI's) median seconds of one all-reduce of ``nbytes`` in one job: blocks of
    each in turn, each block's median the slowest rank's, then the median over blocks."""
    per_block = max(3, iterations(nbytes) // PAIRED_BLOCKS)
    medians: dict[str, list[float]] = {horovod.name: [], mpi.name: []}
    for _ in range(PAIRED_BLOCKS):
        for backend in (horovod, mpi):
            time.sleep(pause_s)
            times = samples(backend, nbytes, warmup + per_block)[warmup:]
            # the slowest rank's, through MPI for both, so Horovod's thread is not woken between blocks
            medians[backend.name].append(mpi.max_over_ranks(statistics.median(times)))
    return statistics.median(medians[horovod.name]), statistics.median(medians[mpi.name])


def measure(name: str, sizes: list[int], master: str) -> tuple[int, int, list[dict[str, object]]]:
    """(rank, world size, rows) for one backend, or both columns of ``paired``."""
    if name != "paired":
        backend = Backend(name, master)
        rows = [{"backend": name, "bytes": size, "time_us": time_size(backend, size) * 1e6} for size in sizes]
        return backend.rank, backend.size, rows
    horovod, mpi = Backend("horovod_sum", master), Backend("mpi", master)
    rows = []
    for size in sizes:
        pair = time_paired(horovod, mpi, size)
        rows += [{"backend": column, "bytes": size, "time_us": seconds * 1e6}
                 for column, seconds in zip(PAIRED, pair, strict=True)]
    return mpi.rank, mpi.size, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--sizes", required=True, help="bytes, comma-separated")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--master", default="127.0.0.1:29512")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # placed as hvdtrain's ranks are (the bench runs on one node), whichever backend is timed
    bind_rank(os.environ, rank_from_env(os.environ), size_from_env(os.environ))
    rank, world_size, results = measure(args.backend, [int(item) for item in args.sizes.split(",")], args.master)
    if rank == 0:
        args.out.write_text(json.dumps({"world_size": world_size, "results": results}) + "\n")
    if args.backend == "gloo":  # after the results are written: gloo ranks leave together and
        leave_and_exit()  # exit without teardown (hvdtrain.bench.gloo)


if __name__ == "__main__":
    main()
