"""One rank of the batching-window test: time synchronous all-reduces under a long Horovod cycle.

Each all-reduce is requested and then waited for at once, so nothing can join its round: with our
patch the wait ends the cycle's batching window, without it (HVDTRAIN_HOROVOD_WAIT=spin, upstream)
every all-reduce waits for the next cycle. Writes OUT/cycle.rankR.json: {"seconds", "checked"}.

    hvdtrain run -np 2 --cycle-time-ms 200 -- python tests/cycle_worker.py OUT
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import horovod.torch as hvd
import torch

ALLREDUCES = 20


def main(out: Path) -> None:
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    hvd.allreduce_(torch.zeros(1), name="cycle.warmup")
    checked = 0
    start = time.monotonic()
    for _ in range(ALLREDUCES):
        tensor = torch.full((1024,), float(rank + 1))
        hvd.allreduce_(tensor, op=hvd.Sum, name="cycle.sum")
        checked += int(torch.equal(tensor, torch.full((1024,), size * (size + 1) / 2)))
    seconds = time.monotonic() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cycle.rank{rank}.json").write_text(json.dumps({"seconds": seconds, "checked": checked}))
    hvd.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
