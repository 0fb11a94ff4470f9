"""What rank 0 writes to ``--out`` besides ``hvdtrain.Run``'s files: summary.json, model.pt and run.json."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hvdtrain
from hvdtrain.atomic import write_atomic
from hvdtrain.train.config import TrainConfig
from hvdtrain.train.loop import EpochMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """``summary.json``: the outcome of a run, the same on every rank."""

    world_size: int
    epochs: int
    final_val_loss: float
    final_val_acc: float
    samples_per_sec: float
    param_checksum: str
    rank_checksums: list[str]
    layout: list[dict[str, Any]]  # where each rank ran, as Horovod saw it, and on which device


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_epoch(metrics: EpochMetrics, cfg: TrainConfig) -> None:
    """One concise line per epoch (its line in ``metrics.jsonl`` is ``hvdtrain.Run``'s)."""
    log.info(f"epoch {metrics.epoch}/{cfg.epochs}  train_loss {metrics.train_loss:.4f}  "
             f"val_loss {_fmt(metrics.val_loss)}  val_acc {_fmt(metrics.val_acc)}  lr {metrics.lr:.4g}  "
             f"{metrics.samples_per_sec:,.0f} samples/s  ({metrics.world_size} ranks, {metrics.elapsed_s:.1f}s)")


def report_summary(summary: Summary, model: nn.Module, cfg: TrainConfig) -> None:
    """The final line, ``summary.json`` and ``model.pt``."""
    identical = len(set(summary.rank_checksums)) == 1
    log.info(f"done: {summary.world_size} ranks, val_acc {summary.final_val_acc:.4f}, "
             f"val_loss {summary.final_val_loss:.4f}, {summary.samples_per_sec:,.0f} samples/s, "
             f"replicas identical: {identical}")
    if cfg.out is not None:
        write_json(cfg.out / "summary.json", asdict(summary))
        torch.save(model.state_dict(), cfg.out / "model.pt")


def git_commit(directory: Path) -> str | None:
    """The commit checked out in ``directory``, if it is a git work tree."""
    try:
        done = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def versions() -> dict[str, str | None]:
    from hvdtrain.launch.detect import detect_mpi

    try:
        import horovod
        horovod_version: str | None = horovod.__version__
    except ImportError:
        horovod_version = None
    mpi = detect_mpi()
    return {"hvdtrain": hvdtrain.__version__, "torch": torch.__version__, "horovod": horovod_version,
            "mpi": mpi.banner if mpi else None}


def build_run_record(cfg: TrainConfig, summary: Summary, argv: Sequence[str], started: datetime,
                     ended: datetime, found_versions: Mapping[str, str | None], commit: str | None) -> dict[str, Any]:
    """``run.json``: enough to know later exactly what ran, where, and from which code."""
    return {"versions": dict(found_versions), "config": cfg.as_plain_dict(), "world_size": summary.world_size,
            "layout": summary.layout, "command": list(argv), "git_commit": commit,
            "started": started.isoformat(), "ended": ended.isoformat()}


def now() -> datetime:
    return datetime.now(UTC)
