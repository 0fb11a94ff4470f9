"""One rank of ``hvdtrain bench allreduce`` for one backend (started by ``hvdtrain run``).

Each backend runs in its own job, so Horovod's background thread never runs while raw MPI or
gloo is timed. Every all-reduce result is checked; the time of a size is the slowest rank's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from hvdtrain.bench.gloo import leave_and_exit
from hvdtrain.job.cores import bind_rank
from hvdtrain.job.ranks import rank_from_env, size_from_env

GROUPED_TENSORS = 64  # the grouped backend splits each size into this many tensors


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

    def close(self) -> None:
        """The last call of a worker, after its results are written: gloo ranks leave together and
        exit without teardown (``hvdtrain.bench.gloo``)."""
        if self.name == "gloo":
            leave_and_exit()

    def max_over_ranks(self, seconds: float) -> float:
        if self.name.startswith("horovod"):
            return float(self.hvd.allreduce(torch.tensor([seconds]), op=self.hvd.Max, name="bench.max").item())
        if self.name == "mpi":
            return float(self.comm.allreduce(seconds, op=self.mpi.MAX))
        value = torch.tensor([seconds])
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MAX)
        return float(value.item())


def time_size(backend: Backend, nbytes: int, warmup: int = 3) -> float:
    """Median seconds of one all-reduce of ``nbytes`` (the slowest rank's), result verified."""
    elements = max(GROUPED_TENSORS, nbytes // 4)
    expected = backend.expected()
    samples = []
    for index in range(warmup + iterations(nbytes)):
        tensor = torch.full((elements,), float(backend.rank + 1))
        backend.barrier()
        start = time.perf_counter()
        result = backend.allreduce(tensor)
        elapsed = time.perf_counter() - start
        if not all(torch.allclose(part, torch.full_like(part, expected)) for part in result):
            raise RuntimeError(f"{backend.name}: wrong all-reduce result at {nbytes} bytes")
        if index >= warmup:
            samples.append(elapsed)
    return backend.max_over_ranks(statistics.median(samples))


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
    backend = Backend(args.backend, args.master)
    results = [{"backend": args.backend, "bytes": int(size), "time_us": time_size(backend, int(size)) * 1e6}
               for size in args.sizes.split(",")]
    if backend.rank == 0:
        args.out.write_text(json.dumps({"world_size": backend.size, "results": results}) + "\n")
    backend.close()


if __name__ == "__main__":
    main()
