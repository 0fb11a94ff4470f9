"""One rank of ``hvdtrain bench idle``: start Horovod, make one all-reduce, then sleep, and report the CPU
time the whole process (Horovod's threads included) used while the rank did nothing."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import horovod.torch as hvd
    import torch

    hvd.init()
    hvd.allreduce(torch.ones(4), name="idle.warmup")
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(args.seconds)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    hvd.allreduce(torch.ones(4), name="idle.done")  # every rank is still in the job after its sleep
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"idle.rank{hvd.rank()}.json").write_text(json.dumps({"rank": hvd.rank(), "cpu_fraction": cpu / wall}))
    hvd.shutdown()


if __name__ == "__main__":
    main()
