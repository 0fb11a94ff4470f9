"""The training configuration and the pure schedule helpers that depend on it."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.cores import bind_rank, binds_cores, pci_numa_node
from hvdtrain.job.signals import DEFAULT_PREEMPT_SIGNAL, preempt_signal_problem

if TYPE_CHECKING:
    from hvdtrain.train.dist import Dist

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
COMPRESSIONS = ("none", "fp16")
OPS = ("average", "adasum")
AMPS = ("none", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine", "step")
# Gradient buckets (train/buckets.py) of up to this many MiB: torch DDP's bucket_cap_mb. Here, not
# there, so that the CLI reads its defaults without importing torch.
DEFAULT_BUCKET_MB = 25.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything one ``hvdtrain train`` run needs; identical on every rank."""

    model: str = "cnn"
    dataset: str = "digits"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    lr_scaling: bool = True
    warmup_epochs: float = 0.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    seed: int = 0
    shuffle: bool = True
    threads_per_rank: int | None = None
    out: Path | None = None
    checkpoint_dir: Path | None = None
    resume_from: Path | None = None
    device: str = "auto"
    label_column: str = "label"
    accumulate: int = 1
    compression: str = "none"
    op: str = "average"
    bucket_mb: float = DEFAULT_BUCKET_MB
    clip_grad_norm: float | None = None
    amp: str = "none"
    lr_schedule: str = "constant"
    eval_every: int = 1
    keep_checkpoints: int = 3
    elastic: bool = False
    commit_every: int = 50
    auto_resume: bool = False
    preempt_signal: str | None = None  # None: $HVDTRAIN_PREEMPT_SIGNAL, else USR1
    preempt_check_every: int = 20
    log_every: int = 10

    def as_plain_dict(self) -> dict[str, Any]:
        """Every field as plain data (paths as strings), for checkpoints and run.json."""
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}

    def __post_init__(self) -> None:
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        if not self.lr > 0:
            raise HvdtrainError(f"--lr {self.lr} must be greater than 0", "use e.g. --lr 0.05")
        if self.warmup_epochs < 0:
            raise HvdtrainError(f"--warmup-epochs {self.warmup_epochs} is negative", "use 0 for no warmup")
        if not 0 <= self.momentum < 1:
            raise HvdtrainError(f"--momentum {self.momentum} is outside [0, 1)", "use e.g. --momentum 0.9")
        if self.threads_per_rank is not None:
            _positive("--threads-per-rank", self.threads_per_rank)
        _positive("--accumulate", self.accumulate)
        _positive("--eval-every", self.eval_every)
        _positive("--keep-checkpoints", self.keep_checkpoints)
        _positive("--commit-every", self.commit_every)
        _positive("--preempt-check-every", self.preempt_check_every)
        _positive("--log-every", self.log_every)
        if self.auto_resume and self.checkpoint_dir is None:
            raise HvdtrainError("--auto-resume needs --checkpoint-dir", "add --checkpoint-dir DIR")
        problem = preempt_signal_problem(self.preempt_signal) if self.preempt_signal is not None else None
        if problem:
            raise HvdtrainError(f"--preempt-signal {problem}", f"use --preempt-signal {DEFAULT_PREEMPT_SIGNAL}")
        if not self.bucket_mb >= 0:
            raise HvdtrainError(f"--bucket-mb {self.bucket_mb} is negative",
                                "use --bucket-mb 0 to reduce gradients tensor by tensor, or e.g. 25")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise HvdtrainError(f"--clip-grad-norm {self.clip_grad_norm} must be greater than 0", "e.g. 1.0")
        if self.op == "adasum" and (self.clip_grad_norm is not None or self.amp == "fp16"):
            # Horovod's Adasum optimizer steps inside the backward hook, on gradients not yet clipped
            # or unscaled, and refuses skip_synchronize(): the combination would crash at the first step.
            raise HvdtrainError("--op adasum cannot clip gradients or scale the loss (--clip-grad-norm, --amp fp16)",
                                "use --op average with them, or drop them with --op adasum")
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--device", self.device, DEVICES)
        _choice("--compression", self.compression, COMPRESSIONS)
        _choice("--op", self.op, OPS)
        _choice("--amp", self.amp, AMPS)
        _choice("--lr-schedule", self.lr_schedule, LR_SCHEDULES)


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise HvdtrainError(f"{flag} {value} must be at least 1", f"use {flag} 1 or more")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HvdtrainError(f"{flag} {value!r} is not one of {', '.join(choices)}", f"use {flag} {choices[0]}")


def lr_scale(cfg: TrainConfig, world_size: int, local_size: int, on_gpu: bool) -> int:
    """What the one-rank LR is multiplied by: the number of ranks, since N ranks take N times larger
    global batches and their gradients are averaged (linear scaling, Goyal et al. 2017);
    with Adasum, which combines gradients without averaging them, 1, except on GPUs, where
    Horovod's Adasum averages within a node first, so its guide scales by the ranks per node."""
    if not cfg.lr_scaling:
        return 1
    if cfg.op == "adasum":
        return local_size if on_gpu else 1
    return world_size


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig, scale: int) -> float:
    """LR for an optimizer step: linear warmup from the one-rank LR to ``scale`` times it
    (``lr_scale``), then the schedule: constant, cosine decay to 0, or step (x0.1 at 1/2 and
    again at 3/4 of training)."""
    target = cfg.lr * scale
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return cfg.lr + (target - cfg.lr) * step / warmup_steps
    total = cfg.epochs * steps_per_epoch
    progress = (step - warmup_steps) / max(total - warmup_steps, 1)
    if cfg.lr_schedule == "cosine":
        return target * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.lr_schedule == "step":
        return target * 0.1 ** sum(step >= total * milestone for milestone in (0.5, 0.75))
    return target


def default_threads(usable_cores: int, local_size: int) -> int:
    """Split this node's cores evenly between its ranks, at least one each."""
    return max(1, usable_cores // max(1, local_size))


def threads_for_rank(explicit: int | None, bound: Collection[int], local_size: int) -> int:
    """The user's count, else one thread per core this rank bound itself to, else an even split
    of the cores it may run on."""
    return explicit or len(bound) or default_threads(usable_cores(), local_size)


def claim_cores(env: Mapping[str, str], explicit: int | None, dist: Dist, device: str) -> int:
    """Bind this rank to its share of the cores when ``hvdtrain run`` asked for it (near its GPU
    when the ranks' GPUs' NUMA nodes are known) and set torch's threads to match; returns their
    number. The even split's count is set first, before the all-gather runs any torch op: a pool
    of OpenMP threads made at the default count can deadlock DataLoader workers forked later
    (a worker hung on a futex here when the all-gather came first)."""
    import torch

    torch.set_num_threads(threads_for_rank(explicit, (), dist.local_size))
    threads = threads_for_rank(explicit, bind_rank(env, dist.local_rank, dist.local_size,
                                                   local_gpu_nodes(env, dist, device)), dist.local_size)
    torch.set_num_threads(threads)
    return threads


def local_gpu_nodes(env: Mapping[str, str], dist: Dist, device: str) -> tuple[int | None, ...]:
    """The NUMA node of each local rank's GPU, by local rank, when ranks bind themselves (then every
    rank takes part in one all-gather at start-up: a rank under per-task GPU binding sees only its
    own GPU); () when binding is off, or when this node's ranks are on the CPU."""
    if not binds_cores(env):
        return ()
    host = socket.gethostname()
    everyone = dist.allgather_object((host, dist.local_rank, gpu_numa_node(device)))
    nodes = tuple(node for name, _, node in sorted(everyone, key=lambda item: item[:2]) if name == host)
    return nodes if len(nodes) == dist.local_size and any(node is not None for node in nodes) else ()


def gpu_numa_node(device: str) -> int | None:
    """The NUMA node of the GPU ``device`` from the PCI bus id torch reports; None on the CPU, or
    when the kernel does not say."""
    if not device.startswith("cuda"):
        return None
    import torch

    props: Any = torch.cuda.get_device_properties(torch.device(device))  # torch's stubs lack the pci_* fields
    return pci_numa_node(f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0")


def usable_cores() -> int:
    """Cores this process may run on (respects cpusets and Slurm's --cpus-per-task binding)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class VisibleGpus:
    """The GPUs a rank can see: how many (``torch.cuda.device_count()``), and whether the scheduler
    gave this rank exactly one (CUDA_VISIBLE_DEVICES naming one device: Slurm's per-task binding)."""

    count: int = 0
    bound_per_task: bool = False


def detect_gpus(env: Mapping[str, str]) -> VisibleGpus:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [item for item in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if item.strip()]
    return VisibleGpus(count, len(named) == 1)


def choose_device(requested: str, gpus: VisibleGpus, local_rank: int, local_size: int, amp: str = "none") -> str:
    """The device this rank trains on: ``cuda:<local_rank>`` when the node's ranks see at least one
    GPU each; ``cuda:0`` when the scheduler bound one GPU to this rank; anything else would put
    two ranks on one GPU, and is refused with the fix."""
    if requested == "cuda" and gpus.count == 0:
        raise HvdtrainError("--device cuda but torch sees no CUDA device", "use --device cpu or auto")
    if requested == "cpu" or gpus.count == 0:
        device = "cpu"
    elif gpus.count >= local_size:
        device = f"cuda:{local_rank}"
    elif gpus.count == 1 and gpus.bound_per_task:
        device = "cuda:0"
    else:
        raise HvdtrainError(f"{local_size} ranks on this node but this rank sees {gpus.count} GPU(s): two ranks "
                            "would share one", "ask for as many GPUs as tasks per node (sbatch --gpus-per-node, or "
                            "--gpus-per-task 1), start fewer ranks per node, or use --device cpu")
    if amp == "fp16" and device == "cpu":
        raise HvdtrainError("--amp fp16 needs a CUDA device", "use --amp bf16 on CPU")
    return device


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch RNG seed for one rank's epoch: a resumed run replays exactly the same randomness."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)
