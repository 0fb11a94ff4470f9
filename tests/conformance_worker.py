"""One rank of the conformance check of a built Horovod: every collective hvdtrain relies on, with its
values checked against what the world size predicts. Needs only torch and Horovod, so it runs in any
venv. Writes OUT/rank-R.json: {"rank", "size", "nccl_built", "checks": {name: "ok" or the error}}.

    mpirun -np 2 python tests/conformance_worker.py OUT
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import horovod.torch as hvd
import torch


def expect(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-8) -> None:
    if actual.shape != expected.shape or actual.dtype != expected.dtype or \
            not torch.allclose(actual, expected, atol=atol):
        raise AssertionError(f"{what}: got {actual.tolist()} ({actual.dtype}), expected {expected.tolist()}")


def check_allreduce_sum(rank: int, size: int) -> None:
    result = hvd.allreduce(torch.full((17,), float(rank + 1)), op=hvd.Sum, name="sum")
    expect(result, torch.full((17,), size * (size + 1) / 2), "allreduce sum")


def check_allreduce_average(rank: int, size: int) -> None:
    result = hvd.allreduce(torch.full((5, 3), float(rank + 1)), op=hvd.Average, name="average")
    expect(result, torch.full((5, 3), (size + 1) / 2), "allreduce average")


def check_allreduce_fp16(rank: int, size: int) -> None:
    """Sent as fp16 and summed in fp16: within fp16's rounding of the exact sum, and back in fp32."""
    values = torch.linspace(-2, 2, 64) * (rank + 1)
    result = hvd.allreduce(values, op=hvd.Sum, compression=hvd.Compression.fp16, name="fp16")
    exact = torch.linspace(-2, 2, 64) * size * (size + 1) / 2
    expect(result, exact, "fp16-compressed allreduce", atol=float(exact.abs().max()) * 2 ** -9 * size)
    if torch.equal(result, exact):
        raise AssertionError("fp16 compression left the values exact: the tensor was not sent as fp16")


def check_allgather(rank: int, size: int) -> None:
    result = hvd.allgather(torch.full((rank + 1, 2), float(rank)), name="allgather")
    expected = torch.cat([torch.full((r + 1, 2), float(r)) for r in range(size)])
    expect(result, expected, "allgather of uneven first dimensions")


def check_broadcast(rank: int, size: int) -> None:
    root = size - 1
    result = hvd.broadcast(torch.arange(6, dtype=torch.float64) * (rank + 10), root_rank=root, name="broadcast")
    expect(result, torch.arange(6, dtype=torch.float64) * (root + 10), "broadcast")


def check_alltoall(rank: int, size: int) -> None:
    # rank r sends r*size + d to rank d, twice; each rank gets one pair from every rank
    sent = torch.tensor([float(rank * size + d) for d in range(size) for _ in range(2)])
    result = hvd.alltoall(sent, splits=torch.full((size,), 2, dtype=torch.int32), name="alltoall")
    expected = torch.tensor([float(r * size + rank) for r in range(size) for _ in range(2)])
    expect(result if isinstance(result, torch.Tensor) else result[0], expected, "alltoall")


def check_reducescatter(rank: int, size: int) -> None:
    rows = torch.arange(size * 3, dtype=torch.float32).reshape(size * 3, 1) + rank
    result = hvd.reducescatter(rows, op=hvd.Sum, name="reducescatter")
    total = torch.arange(size * 3, dtype=torch.float32).reshape(size * 3, 1) * size + sum(range(size))
    expect(result, total[rank * 3:(rank + 1) * 3], "reducescatter")


def check_join(rank: int, size: int) -> None:
    """Rank 0 runs one more allreduce than the others; ranks that joined count as zeros."""
    if rank == 0:
        result = hvd.allreduce(torch.ones(4), op=hvd.Sum, name="after_join")
        expect(result, torch.ones(4), "allreduce while the other ranks have joined")
    last = hvd.join()
    if last not in range(size):
        raise AssertionError(f"join returned {last}, not a rank")


def check_optimizer_accumulation(rank: int, size: int) -> None:
    """DistributedOptimizer with backward_passes_per_step=2: local sums over passes, averaged over ranks."""
    weight = torch.nn.Parameter(torch.zeros(4))
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD([weight], lr=0.1), named_parameters=[("w", weight)],
                                         backward_passes_per_step=2)
    hvd.broadcast_parameters({"w": weight}, root_rank=0)
    for step in range(2):
        optimizer.zero_grad()
        for micro in range(2):
            (weight * (rank + 1 + micro + step)).sum().backward()
        optimizer.step()
    mean_grad = [sum(2 * r + 3 + 2 * step for r in range(size)) / size for step in range(2)]
    expect(weight.detach(), torch.full((4,), -0.1 * sum(mean_grad)), "weights after two accumulated steps")
    gathered = hvd.allgather(weight.detach().unsqueeze(0), name="weights")
    if not all(torch.equal(gathered[0], row) for row in gathered):
        raise AssertionError(f"ranks disagree on the weights: {gathered.tolist()}")


CHECKS: dict[str, Callable[[int, int], None]] = {
    "allreduce_sum": check_allreduce_sum, "allreduce_average": check_allreduce_average,
    "allreduce_fp16": check_allreduce_fp16, "allgather": check_allgather, "broadcast": check_broadcast,
    "alltoall": check_alltoall, "reducescatter": check_reducescatter, "join": check_join,
    "optimizer_backward_passes": check_optimizer_accumulation,
}


def main(out: Path) -> None:
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    checks = {}
    for name, check in CHECKS.items():
        try:
            check(rank, size)
            checks[name] = "ok"
        except Exception as exc:  # every check runs and is reported, so one failure shows all
            checks[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    out.mkdir(parents=True, exist_ok=True)
    report = {"rank": rank, "size": size, "nccl_built": int(hvd.nccl_built()), "checks": checks}
    (out / f"rank-{rank}.json").write_text(json.dumps(report, indent=2))
    hvd.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
