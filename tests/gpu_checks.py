"""GPU checks, run by `make test-gpu` on a node with NVIDIA GPUs and a CUDA torch (not part of `make test`:
CI and the development machine have no GPU, so these have not been run there).

    make test-gpu TORCH=2.14.1

1. NCCL all-reduce across the local GPUs, one GPU per local rank, values checked on the GPU.
2. `hvdtrain train --device cuda --amp fp16` on every local GPU: ranks end with identical parameters.
3. Gradient buckets on CUDA tensors (NCCL), small enough to start during backward, against Horovod's
   per-tensor all-reduce: identical replicas, the same accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, train_mpi

pytestmark = pytest.mark.gpu
WORKER = """
import json, sys, horovod.torch as hvd, torch
hvd.init()
torch.cuda.set_device(hvd.local_rank())
value = torch.full((1 << 20,), float(hvd.rank() + 1), device="cuda")
total = hvd.allreduce(value, op=hvd.Sum, name="gpu_sum")
expected = hvd.size() * (hvd.size() + 1) / 2
json.dump({"rank": hvd.rank(), "device": str(total.device), "nccl_built": int(hvd.nccl_built()),
           "ok": bool(torch.all(total == expected).item())}, open(f"{sys.argv[1]}/rank-{hvd.rank()}.json", "w"))
"""


def gpus() -> int:
    count = torch.cuda.device_count()
    assert count > 0, "make test-gpu needs a node with NVIDIA GPUs and a CUDA build of torch"
    return count


def test_nccl_allreduce_one_gpu_per_local_rank(tmp_path):
    count = gpus()
    as_root = ["--allow-run-as-root"] if os.getuid() == 0 else []
    done = subprocess.run(["mpirun", *as_root, "-np", str(count), "--bind-to", "none", sys.executable, "-c", WORKER,
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(count)]
    assert [report["device"] for report in reports] == [f"cuda:{rank}" for rank in range(count)]
    assert all(report["ok"] and report["nccl_built"] for report in reports), reports


def test_train_amp_fp16_on_every_local_gpu(tmp_path):
    count = gpus()
    summary = train_mpi(count, tmp_path / "out", "--model", "cnn", "--dataset", "digits", "--epochs", "3",
                        "--device", "cuda", "--amp", "fp16")
    assert summary["world_size"] == count and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    assert summary["final_val_acc"] > 0.8, summary


def test_gradient_buckets_on_every_local_gpu(tmp_path):
    count = gpus()
    args = ("--model", "cnn", "--dataset", "digits", "--epochs", "3", "--device", "cuda", "--no-shuffle")
    runs = {mb: train_mpi(count, tmp_path / mb, *args, "--bucket-mb", mb) for mb in ("0.001", "25", "0")}
    for summary in runs.values():
        assert summary["world_size"] == count and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    # NCCL may sum a bucket's elements in another order than a lone tensor's beyond 2 ranks: the
    # same accuracy, not the same bits.
    assert all(abs(summary["final_val_acc"] - runs["0"]["final_val_acc"]) <= 0.03 for summary in runs.values())
