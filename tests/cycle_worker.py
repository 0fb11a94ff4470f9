"""One rank of the batching-window tests: time synchronous all-reduces under a long Horovod cycle.

Each all-reduce is requested and then waited for at once, so nothing can join its round: with our
patch the wait ends the cycle's batching window, without it (HVDTRAIN_HOROVOD_WAIT=spin, upstream)
every all-reduce waits for the next cycle.

``late`` (for a 100 ms cycle): before each all-reduce rank 0 sleeps 50 ms and the other ranks
120 ms. Rank 0's round starts alone; the late ranks' background threads, idle past their window,
join it with nothing queued, and it ends without the tensor. Rank 0's thread must start the next
round at once, because its training thread still waits: a patch that let it sleep out its window
made every late rank wait 30 ms more per all-reduce.

Writes OUT/cycle.rankR.json: {"seconds" (inside the all-reduces), "checked"}.

    hvdtrain run -np 2 --cycle-time-ms 200 -- python tests/cycle_worker.py OUT [late]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import horovod.torch as hvd
import torch

ALLREDUCES = 20


def main(out: Path, late: bool) -> None:
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    hvd.allreduce_(torch.zeros(1), name="cycle.warmup")
    checked, seconds = 0, 0.0
    for _ in range(ALLREDUCES):
        if late:
            time.sleep(0.05 if rank == 0 else 0.12)
        tensor = torch.full((1024,), float(rank + 1))
        start = time.monotonic()
        hvd.allreduce_(tensor, op=hvd.Sum, name="cycle.sum")
        seconds += time.monotonic() - start
        checked += int(torch.equal(tensor, torch.full((1024,), size * (size + 1) / 2)))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cycle.rank{rank}.json").write_text(json.dumps({"seconds": seconds, "checked": checked}))
    hvd.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), late=sys.argv[2:] == ["late"])
