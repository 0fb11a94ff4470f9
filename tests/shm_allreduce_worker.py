"""One rank of the check of within-node-shared-memory-allreduce.patch: all-reduces that take the
shared-memory path (float32/float64 sums and averages, scaled, fused, in pieces of 1 MiB with
chunks split unevenly) and ones that keep MPI_Allreduce (float16, int32, max), each result checked
against the sum of every rank's input, recomputed here from the same seeds.

    hvdtrain run -np N --horovod-allreduce shm|mpi -- python tests/shm_allreduce_worker.py OUT

Writes OUT/rank-R.json: {"rank", "size", "errors": [...], "digest": sha256 of every result's bytes}.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import horovod.torch as hvd
import torch

PIECE_FLOATS = 2**20 // 4  # the patch's piece: 1 MiB
# name: (elements, dtype, op, prescale, postscale)
CASES = {
    "float32 sum, 5 elements": (5, torch.float32, hvd.Sum, 1.0, 1.0),
    "float32 sum, one piece and 3": (PIECE_FLOATS + 3, torch.float32, hvd.Sum, 1.0, 1.0),
    "float32 sum, 3 pieces and 11": (3 * PIECE_FLOATS + 11, torch.float32, hvd.Sum, 1.0, 1.0),
    "float64 average, 200003 elements": (200_003, torch.float64, hvd.Average, 1.0, 1.0),
    "float32 sum, scaled before and after": (1000, torch.float32, hvd.Sum, 0.5, 3.0),
    "float16 sum (MPI)": (1000, torch.float16, hvd.Sum, 1.0, 1.0),
    "int32 sum (MPI)": (1001, torch.int32, hvd.Sum, 1.0, 1.0),
    "float32 max (MPI)": (1000, torch.float32, hvd.Max, 1.0, 1.0),
}
FUSED = [k * 997 + 1 for k in range(30)]  # sizes of tensors reduced together, through the fusion buffer


def contribution(case: int, rank: int, elements: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * case + rank)
    if dtype == torch.int32:
        return torch.randint(-1000, 1000, (elements,), generator=generator, dtype=torch.int32)
    return (torch.randn(elements, generator=generator, dtype=torch.float64) * 100).to(dtype)


def expected(parts: list[torch.Tensor], op: int, prescale: float, postscale: float) -> torch.Tensor:
    stacked = torch.stack([part.double() * prescale for part in parts])
    if op == hvd.Max:
        return stacked.max(0).values
    total = stacked.sum(0) * postscale
    return total / len(parts) if op == hvd.Average else total


def main(out: Path) -> None:
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    errors, digest = [], hashlib.sha256()
    for case, (name, (elements, dtype, op, prescale, postscale)) in enumerate(CASES.items()):
        parts = [contribution(case, r, elements, dtype) for r in range(size)]
        mine = parts[rank].clone()
        result = hvd.allreduce(mine, op=op, prescale_factor=prescale, postscale_factor=postscale, name=name)
        if not torch.equal(mine, parts[rank]):
            errors.append(f"{name}: the input tensor changed")
        # float16 rounds each partial sum of values in the hundreds to within 0.25
        rtol, atol = (1e-2, 1.0) if dtype == torch.float16 else (1e-4, 1e-3)
        if not torch.allclose(result.double(), expected(parts, op, prescale, postscale), rtol=rtol, atol=atol):
            errors.append(f"{name}: wrong result")
        digest.update(result.numpy().tobytes())
    fused = [contribution(100 + k, rank, n, torch.float32) for k, n in enumerate(FUSED)]
    handles = [hvd.allreduce_async_(tensor, op=hvd.Sum, name=f"fused.{k}") for k, tensor in enumerate(fused)]
    for k, handle in enumerate(handles):
        result = hvd.synchronize(handle)
        parts = [contribution(100 + k, r, FUSED[k], torch.float32) for r in range(size)]
        if not torch.allclose(result.double(), expected(parts, hvd.Sum, 1.0, 1.0), rtol=1e-4, atol=1e-3):
            errors.append(f"fused tensor {k}: wrong result")
        digest.update(result.numpy().tobytes())
    out.mkdir(parents=True, exist_ok=True)
    report = {"rank": rank, "size": size, "errors": errors, "digest": digest.hexdigest()}
    (out / f"rank-{rank}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
