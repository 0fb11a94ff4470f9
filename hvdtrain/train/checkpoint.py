"""Self-describing checkpoints, written atomically by rank 0 and found again on resume."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hvdtrain
from hvdtrain.atomic import write_atomic
from hvdtrain.errors import HvdtrainError
from hvdtrain.train.config import TrainConfig

SCHEMA_VERSION = 1
_NAME = re.compile(r"^ckpt-epoch(\d+)(?:-step(\d+))?\.pt$")


def checkpoint_path(directory: Path, epoch: int, step: int = 0) -> Path:
    """``ckpt-epochE.pt`` after E whole epochs; ``ckpt-epochE-stepS.pt`` S steps into the next."""
    return directory / (f"ckpt-epoch{epoch:05d}.pt" if not step else f"ckpt-epoch{epoch:05d}-step{step:06d}.pt")


def list_checkpoints(directory: Path) -> list[tuple[tuple[int, int], Path]]:
    """((completed epochs, steps into the next), path) of every checkpoint, oldest first."""
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
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
                     cfg: TrainConfig, world_size: int, step: int = 0) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly where this one stopped."""
    return {
        "schema_version": SCHEMA_VERSION,
        "hvdtrain_version": hvdtrain.__version__,
        "epoch": epoch,
        "step": step,  # optimizer steps already done in epoch `epoch + 1` (a preemption checkpoint)
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": cfg.as_plain_dict(),
        "world_size": world_size,
        # The sampler order and torch RNG of epoch e derive from (seed, e) alone,
        # so these two numbers are the complete sampler and RNG state.
        "sampler": {"seed": cfg.seed, "shuffle": cfg.shuffle, "next_epoch": epoch, "skip_steps": step},
        "rng": {"base_seed": cfg.seed, "next_epoch": epoch},
    }


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checkpoint(path: Path, state: dict[str, Any], keep: int | None = None) -> None:
    """Write atomically (temp file, fsync, rename), with its sha256 beside it, then drop all but
    the newest ``keep``. The checksum goes first: a crash in between leaves a checkpoint that
    fails verification, never one that passes it wrongly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    write_atomic(checksum_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())
    write_atomic(path, data)
    if keep is not None:
        for _, old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint after checking it against its sha256 and its schema."""
    try:
        data = path.read_bytes()
        expected = checksum_path(path).read_text().strip()
    except OSError as exc:
        raise HvdtrainError(f"checkpoint {path} is unreadable ({exc.strerror})",
                            "resume from an earlier checkpoint, or start without --resume") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise HvdtrainError(f"checkpoint {path} is corrupt (sha256 mismatch: truncated or overwritten)",
                            "delete it to resume from the previous one, or start without --resume")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise HvdtrainError(f"checkpoint {path} is unreadable ({type(exc).__name__})",
                            "delete it to resume from the previous one, or start without --resume") from exc
    if not isinstance(state, dict) or state.get("schema_version") != SCHEMA_VERSION:
        raise HvdtrainError(f"{path} is not an hvdtrain checkpoint of schema {SCHEMA_VERSION}",
                            "resume from a checkpoint written by this hvdtrain version")
    return state


def read_latest_good(directory: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """The newest checkpoint that verifies, and one line for each newer one that did not."""
    find_latest(directory)  # a missing or empty directory is its own error
    skipped: list[str] = []
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, read_checkpoint(path), skipped
        except HvdtrainError as exc:
            skipped.append(exc.problem)
    raise HvdtrainError(f"--resume: no usable checkpoint in {directory} ({skipped[0]})",
                        "start without --resume")


def state_checksum(model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """sha256 of the parameters and the optimizer state, to prove replicas agree after a restore."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for index, values in sorted(optimizer.state_dict()["state"].items()):
        for key, value in sorted(values.items()):
            digest.update(f"{index}.{key}".encode())
            if isinstance(value, torch.Tensor):
                digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()
