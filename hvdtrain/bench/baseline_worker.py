"""The comparison loops of ``hvdtrain bench train``, written as users write them.

``--mode plain``: one process, no distribution. ``--mode independent``: every rank trains on
its own shard and never communicates (the physical limit of N processes on this machine).
``--mode ddp``: torch DistributedDataParallel over gloo. Ranks come from the launcher's
environment, like hvdtrain's; every rank writes its samples/s and the seconds of each step of the
timed epoch to ``OUT.rankN``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from hvdtrain.bench.gloo import leave_and_exit
from hvdtrain.job.cores import bind_rank
from hvdtrain.job.ranks import rank_from_env, size_from_env
from hvdtrain.train.specs import call_with_known, load_callable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["plain", "independent", "ddp"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--momentum", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--master", default="127.0.0.1:29513")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank = rank_from_env(os.environ)
    size = size_from_env(os.environ) if args.mode != "plain" else 1
    bind_rank(os.environ, rank, size)  # placed as hvdtrain's ranks are (the bench runs on one node)
    torch.manual_seed(0)
    model: nn.Module = call_with_known(load_callable(args.model, "--model"), args.model, "--model")
    train, _ = call_with_known(load_callable(args.dataset, "--dataset"), args.dataset, "--dataset", seed=0)
    if args.mode == "ddp":
        torch.distributed.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=rank, world_size=size)
        model = nn.parallel.DistributedDataParallel(model)
    sampler: DistributedSampler[Any] = DistributedSampler(train, num_replicas=size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    speed, steps = 0.0, list[float]()
    for epoch in range(args.epochs):  # the last epoch is timed; the first warms up
        sampler.set_epoch(epoch)
        start, samples, steps = time.perf_counter(), 0, []
        for x, y in loader:
            step_start = time.perf_counter()
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            steps.append(time.perf_counter() - step_start)
            samples += len(y)
        speed = samples / (time.perf_counter() - start)
    Path(f"{args.out}.rank{rank}").write_text(json.dumps({"samples_per_sec": speed, "step_seconds": steps}) + "\n")
    if args.mode == "ddp":
        leave_and_exit()


if __name__ == "__main__":
    main()
