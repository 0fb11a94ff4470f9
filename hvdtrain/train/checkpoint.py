"""Self-describing checkpoints, written atomically by rank 0 and found again on resume."""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hvdtrain
from hvdtrain.errors import HvdtrainError
from hvdtrain.train.config import TrainConfig

SCHEMA_VERSION = 1
_NAME = re.compile(r"^ckpt-epoch(\d+)\.pt$")


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt-epoch{epoch:05d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(completed epochs, path) of every checkpoint in ``directory``, oldest first."""
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def find_latest(directory: Path) -> Path:
    """The newest checkpoint; a missing directory or an empty one is the user's to fix."""
    if not directory.is_dir():
        raise HvdtrainError(f"--resume: checkpoint directory {directory} does not exist",
                            "point --checkpoint-dir (or --resume DIR) at the checkpoints of an earlier run")
    found = list_checkpoints(directory)
    if not found:
        raise HvdtrainError(f"--resume: no checkpoint (ckpt-epoch*.pt) in {directory}",
                            "start without --resume, or point it at the directory of an earlier run")
    return found[-1][1]


def build_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                     cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly where this one stopped."""
    config = {key: str(value) if isinstance(value, Path) else value for key, value in asdict(cfg).items()}
    return {
        "schema_version": SCHEMA_VERSION,
        "hvdtrain_version": hvdtrain.__version__,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": config,
        "world_size": world_size,
        # The sampler order and torch RNG of epoch e derive from (seed, e) alone,
        # so these two numbers are the complete sampler and RNG state.
        "sampler": {"seed": cfg.seed, "shuffle": cfg.shuffle, "next_epoch": epoch},
        "rng": {"base_seed": cfg.seed, "next_epoch": epoch},
    }


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename:
    a reader sees the old checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise HvdtrainError(f"checkpoint {path} is unreadable ({type(exc).__name__})",
                            "delete it to resume from the previous one, or start without --resume") from exc
    if not isinstance(state, dict) or state.get("schema_version") != SCHEMA_VERSION:
        raise HvdtrainError(f"{path} is not an hvdtrain checkpoint of schema {SCHEMA_VERSION}",
                            "resume from a checkpoint written by this hvdtrain version")
    return state
