"""Checkpoint files: named after their run and place, written atomically with a sha256 beside them,
verified before use, and rotated only among the run's own.

``ckpt-<run id>-epochE.pt`` is the state after E whole epochs; ``ckpt-<run id>-epochE-batchB.pt`` is
B batches into epoch E + 1 (a preemption, or a save inside the epoch). The sha256 sidecar catches a
truncated or damaged file; it is not an authentication: anyone who can write the folder can write
both. Loading uses ``weights_only=True``, so a checkpoint holds tensors and plain values only.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdtrain.atomic import write_atomic
from hvdtrain.errors import HvdtrainError

SCHEMA_VERSION = 2
_NAME = re.compile(r"^ckpt-([0-9a-f]{8})-epoch(\d+)(?:-batch(\d+))?\.pt$")


@dataclass(frozen=True, order=True)
class CheckpointFile:
    """One checkpoint file, ordered by its place in training."""

    epoch: int  # whole epochs done
    batch: int  # batches done in the next epoch
    run_id: str
    path: Path


def checkpoint_path(directory: Path, run_id: str, epoch: int, batch: int = 0) -> Path:
    place = f"epoch{epoch:05d}" + (f"-batch{batch:06d}" if batch else "")
    return directory / f"ckpt-{run_id}-{place}.pt"


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def list_checkpoints(directory: Path) -> list[CheckpointFile]:
    """Every checkpoint in ``directory`` (of any run), oldest place first; none if it is missing."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(CheckpointFile(int(match.group(2)), int(match.group(3) or 0), match.group(1), path))
    return sorted(found)


def encode(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"schema_version": SCHEMA_VERSION, **state}, buffer)
    return buffer.getvalue()


def write_checkpoint(path: Path, data: bytes, run_id: str, keep: int) -> None:
    """Write atomically with its sha256 beside it, then remove this run's older checkpoints beyond
    the newest ``keep`` (never the one just written, never another run's). The checksum goes first:
    a crash in between leaves a checkpoint that fails verification, never one that passes wrongly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(checksum_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())
    write_atomic(path, data)
    own = [found for found in list_checkpoints(path.parent) if found.run_id == run_id and found.path != path]
    for old in own[:max(len(own) - (keep - 1), 0)]:
        old.path.unlink(missing_ok=True)
        checksum_path(old.path).unlink(missing_ok=True)


def read_verified(path: Path) -> bytes:
    """The file's bytes, after checking them against the sha256 beside it."""
    try:
        data = path.read_bytes()
        expected = checksum_path(path).read_text().strip()
    except OSError as exc:
        raise HvdtrainError(f"checkpoint {path} is unreadable ({exc.strerror})",
                            "delete it to resume from the previous one") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise HvdtrainError(f"checkpoint {path} is corrupt (sha256 mismatch: truncated or overwritten)",
                            "delete it to resume from the previous one")
    return data


def decode(data: bytes, source: Path) -> dict[str, Any]:
    """The state in a verified checkpoint: tensors and plain values only, of this schema."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise HvdtrainError(f"checkpoint {source} is unreadable ({type(exc).__name__})",
                            "delete it to resume from the previous one") from exc
    if not isinstance(state, dict) or state.get("schema_version") != SCHEMA_VERSION:
        raise HvdtrainError(f"{source} is not an hvdtrain checkpoint of schema {SCHEMA_VERSION}",
                            "resume from a checkpoint written by this hvdtrain version")
    return state


def newest_good(found: list[CheckpointFile]) -> tuple[CheckpointFile | None, bytes, list[str]]:
    """The newest of ``found`` that verifies and loads, its bytes, and one line for each newer one
    that did not."""
    skipped: list[str] = []
    for candidate in reversed(found):
        try:
            data = read_verified(candidate.path)
            decode(data, candidate.path)
            return candidate, data, skipped
        except HvdtrainError as exc:
            skipped.append(exc.problem)
    return None, b"", skipped
