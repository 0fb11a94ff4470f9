"""GPU checks, run by `make test-gpu` on a node with NVIDIA GPUs and a CUDA torch; not part of
`make test` (CI and the development machine have no GPU).

    make test-gpu TORCH=2.14.1

Each check says what it needs; the two-GPU ones are marked `two_gpus`, and `make test-gpu` leaves
them out on a node with fewer GPUs, saying so in one line. Nothing is skipped. About 3 minutes on
one node.

Needs 1 GPU:
- NCCL all-reduce on every local GPU (1 rank per GPU), the sums checked on the GPU.
- One rank more than GPUs: refused before training (two would share a GPU), one line, exit 2.
- `--amp fp16` resume: stopped after 2 of 4 epochs and resumed, the run ends where a run never
  stopped ends, bit for bit, and the GradScaler's scale survived in the checkpoint.
- Accumulation, clipping, fp16 compression and Adam together on CUDA: replicas identical, it learns.
- The own-script example: one parameter hash on every rank, on the GPU.
Needs 2 GPUs:
- 2 ranks on 2 GPUs (`cuda:0`, `cuda:1`): identical replicas, accuracy floor.
- 2 ranks with one GPU each through CUDA_VISIBLE_DEVICES set per rank, as Slurm's per-task
  binding does: each takes `cuda:0`, on different GPUs; identical replicas, accuracy floor.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import HVDTRAIN, REPO, hvdtrain, train_mpi

pytestmark = pytest.mark.gpu
MLP = ("--model", "mlp", "--dataset", "digits", "--device", "cuda", "--batch-size", "32", "--no-shuffle")
FLOOR = 0.85  # validation accuracy after 3 epochs of the MLP on digits (chance: 0.1; CPU: 0.9+)
WORKER = """
import json, sys, horovod.torch as hvd, torch
hvd.init()
torch.cuda.set_device(hvd.local_rank())
value = torch.full((1 << 20,), float(hvd.rank() + 1), device="cuda")
total = hvd.allreduce(value, op=hvd.Sum, name="gpu_sum")
expected = hvd.size() * (hvd.size() + 1) / 2
json.dump({"device": str(total.device), "nccl_built": int(hvd.nccl_built()),
           "ok": bool(torch.all(total == expected).item())}, open(f"{sys.argv[1]}/rank-{hvd.rank()}.json", "w"))
"""
PER_TASK = 'CUDA_VISIBLE_DEVICES=$OMPI_COMM_WORLD_LOCAL_RANK exec "$0" "$@"'  # what srun --gpus-per-task 1 does


def gpus(needed: int = 1) -> int:
    count = torch.cuda.device_count()
    assert count >= needed, f"this check needs {needed} GPU(s) and a CUDA torch; this node has {count}"
    return count


def replicas_agree(summary: dict, ranks: int) -> None:
    assert summary["world_size"] == ranks and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    assert summary["final_val_acc"] > FLOOR, summary


def test_nccl_allreduce_on_every_local_gpu(tmp_path):
    count = gpus(1)
    as_root = ["--allow-run-as-root"] if os.getuid() == 0 else []
    done = subprocess.run(["mpirun", *as_root, "-np", str(count), "--bind-to", "none", sys.executable, "-c", WORKER,
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in range(count)]
    assert [report["device"] for report in reports] == [f"cuda:{rank}" for rank in range(count)]
    assert all(report["ok"] and report["nccl_built"] for report in reports), reports


def test_more_ranks_than_gpus_are_refused(tmp_path):
    count = gpus(1)
    done = hvdtrain("run", "-np", str(count + 1), "--oversubscribe", "--", HVDTRAIN, "train", *MLP, "--epochs", "1",
                    "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "two ranks would share one" in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_amp_fp16_resume_keeps_the_grad_scaler(tmp_path):
    ranks = min(gpus(1), 2)
    args = (*MLP, "--amp", "fp16", "--lr", "0.05")
    straight = train_mpi(ranks, tmp_path / "straight", *args, "--epochs", "4")
    ckpt = tmp_path / "ckpt"
    train_mpi(ranks, tmp_path / "resumed", *args, "--epochs", "2", "--checkpoint-dir", str(ckpt))
    (saved,) = ckpt.glob("ckpt-*-epoch00002.pt")
    scaler = torch.load(saved, weights_only=True)["objects"]["scaler"]
    assert scaler["_growth_tracker"] > 0 or scaler["scale"] != 65536.0, scaler  # it has stepped (or backed off)
    resumed = train_mpi(ranks, tmp_path / "resumed", *args, "--epochs", "4", "--checkpoint-dir", str(ckpt),
                        "--resume")
    assert resumed["param_checksum"] == straight["param_checksum"]
    replicas_agree(resumed, ranks)


def test_accumulation_clipping_fp16_compression_and_adam(tmp_path):
    ranks = min(gpus(1), 2)
    summary = train_mpi(ranks, tmp_path / "out", *MLP, "--epochs", "3", "--optimizer", "adam", "--lr", "0.002",
                        "--accumulate", "2", "--clip-grad-norm", "1.0", "--compression", "fp16",
                        "--bucket-mb", "0.01")
    replicas_agree(summary, ranks)
    assert {slot["device"] for slot in summary["layout"]} == {f"cuda:{rank}" for rank in range(ranks)}


def test_the_example_script(tmp_path):
    ranks = min(gpus(1), 2)
    done = hvdtrain("run", "-np", str(ranks), "--", sys.executable, str(REPO / "examples" / "own_script.py"),
                    "--epochs", "3", "--run-dir", str(tmp_path / "own"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    hashes = set(re.findall(r"rank \d+ of \d+: parameters ([0-9a-f]{64})", done.stdout))
    assert len(hashes) == 1 and done.stdout.count(": parameters ") == ranks, done.stdout
    accuracy = float(re.findall(r"epoch 3: train accuracy ([0-9.]+)", done.stdout)[0])
    assert accuracy > FLOOR, done.stdout


@pytest.mark.two_gpus
def test_two_ranks_on_two_gpus(tmp_path):
    gpus(2)
    summary = train_mpi(2, tmp_path / "out", *MLP, "--epochs", "3")
    replicas_agree(summary, 2)
    assert [slot["device"] for slot in summary["layout"]] == ["cuda:0", "cuda:1"]


@pytest.mark.two_gpus
def test_two_ranks_one_gpu_each_bound_per_task(tmp_path):
    gpus(2)
    done = hvdtrain("run", "-np", "2", "--", "sh", "-c", PER_TASK, HVDTRAIN, "train", *MLP, "--epochs", "3",
                    "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    replicas_agree(summary, 2)
    assert [slot["device"] for slot in summary["layout"]] == ["cuda:0", "cuda:0"]  # a different GPU each
