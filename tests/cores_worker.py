"""One rank of the core-binding test: join the job through hvdtrain's API, then report the cores of
every thread of this process (Horovod's background thread included) and torch's thread count.

    hvdtrain run -np 2 -- python tests/cores_worker.py OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import hvdtrain


def main(out: Path) -> None:
    context = hvdtrain.setup()
    threads = {task.name: sorted(os.sched_getaffinity(int(task.name))) for task in Path("/proc/self/task").iterdir()}
    out.mkdir(parents=True, exist_ok=True)
    report = {"rank": context.rank, "threads": threads, "torch_threads": torch.get_num_threads()}
    (out / f"cores.rank{context.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
