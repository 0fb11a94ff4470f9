"""The training configuration and the pure schedule helpers that depend on it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import HvdtrainError

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")


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
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--device", self.device, DEVICES)


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise HvdtrainError(f"{flag} {value} must be at least 1", f"use {flag} 1 or more")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HvdtrainError(f"{flag} {value!r} is not one of {', '.join(choices)}", f"use {flag} {choices[0]}")


def scaled_lr(base_lr: float, world_size: int, scaling: bool) -> float:
    """Linear scaling (Goyal et al. 2017): N ranks take N times larger global batches."""
    return base_lr * world_size if scaling else base_lr


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig, world_size: int) -> float:
    """LR for a global step: linear warmup from the one-rank LR to the scaled LR, then constant."""
    target = scaled_lr(cfg.lr, world_size, cfg.lr_scaling)
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if warmup_steps <= 0 or step >= warmup_steps:
        return target
    return cfg.lr + (target - cfg.lr) * step / warmup_steps


def default_threads(usable_cores: int, local_size: int) -> int:
    """Split this node's cores evenly between its ranks, at least one each."""
    return max(1, usable_cores // max(1, local_size))


def usable_cores() -> int:
    """Cores this process may run on (respects cpusets and Slurm's --cpus-per-task binding)."""
    return len(os.sched_getaffinity(0))


def choose_device(requested: str, cuda_available: bool, local_rank: int) -> str:
    """``cuda:<local_rank>`` when CUDA is asked for (or auto and present), else ``cpu``."""
    if requested == "cuda" and not cuda_available:
        raise HvdtrainError("--device cuda but torch sees no CUDA device", "use --device cpu or auto")
    if requested == "cuda" or (requested == "auto" and cuda_available):
        return f"cuda:{local_rank}"
    return "cpu"


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch RNG seed for one rank's epoch: a resumed run replays exactly the same randomness."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**63)
