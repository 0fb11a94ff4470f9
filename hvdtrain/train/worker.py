"""The per-rank program behind ``hvdtrain train``: set up, resume, train, record."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts import Slot
from hvdtrain.train import checkpoint
from hvdtrain.train.config import TrainConfig, choose_device, default_threads, usable_cores
from hvdtrain.train.data import load_dataset
from hvdtrain.train.dist import Dist, init_dist
from hvdtrain.train.loop import (
    EpochMetrics,
    Throughput,
    build_train_loader,
    build_val_loader,
    evaluate,
    fit,
    param_checksum,
)
from hvdtrain.train.models import build_model


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
    layout: list[dict[str, Any]]  # where each rank ran, as Horovod saw it


def my_slot(dist: Dist) -> Slot:
    return Slot(rank=dist.rank, local_rank=dist.local_rank, local_size=dist.local_size,
                cross_rank=dist.cross_rank, cross_size=dist.cross_size, host=socket.gethostname())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, dist: Dist) -> int:
    """Rank 0 loads the newest checkpoint; every rank learns the outcome, so a bad checkpoint
    stops all ranks with the same message instead of leaving them waiting. Returns the
    number of epochs already done."""
    outcome: tuple[int, tuple[str, str] | None] = (0, None)
    if cfg.resume_from is not None and dist.rank == 0:
        try:
            path = checkpoint.find_latest(cfg.resume_from)
            state = checkpoint.read_checkpoint(path)
            if state["config"]["model"] != cfg.model:
                raise HvdtrainError(f"{path} holds model {state['config']['model']!r}, not {cfg.model!r}",
                                    f"resume with --model {state['config']['model']}")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            outcome = (int(state["epoch"]), None)
        except HvdtrainError as exc:
            outcome = (0, (exc.problem, exc.hint))
    start_epoch, failure = dist.broadcast_object(outcome) if cfg.resume_from is not None else outcome
    if failure is not None:
        raise HvdtrainError(*failure)
    dist.broadcast_state(model, optimizer)
    return start_epoch


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def place(model: nn.Module, cfg: TrainConfig, dist: Dist) -> str:
    """Set this rank's torch threads and device; move the model there."""
    torch.set_num_threads(cfg.threads_per_rank or default_threads(usable_cores(), dist.local_size))
    device = choose_device(cfg.device, torch.cuda.is_available(), dist.local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # Horovod: one GPU per local rank
    model.to(device)
    return device


def run_worker(cfg: TrainConfig, env: Mapping[str, str]) -> Summary:
    """Train on this rank; rank 0 writes metrics, checkpoints and the summary."""
    data = load_dataset(cfg.dataset, cfg.seed)  # bad names fail here, before joining the job
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    dist = init_dist(env)
    is_root = dist.rank == 0
    device = place(model, cfg, dist)
    optimizer = dist.wrap_optimizer(build_optimizer(model, cfg), model)
    start_epoch = restore(model, optimizer, cfg, dist)
    if is_root and cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:
            (cfg.out / "metrics.jsonl").write_text("")

    train_loader = build_train_loader(data.train, dist, cfg)
    val_loader = build_val_loader(data.val, dist, cfg.batch_size)
    last: EpochMetrics | None = None
    total = Throughput(0, 0.0)
    for metrics, speed in fit(model, optimizer, train_loader, val_loader, dist, cfg, device, start_epoch,
                              show_progress=is_root and sys.stdout.isatty()):
        last, total = metrics, Throughput(total.samples + speed.samples, total.seconds + speed.seconds)
        if is_root:
            report_epoch(metrics, cfg)
            if cfg.checkpoint_dir is not None:
                state = checkpoint.build_checkpoint(model, optimizer, metrics.epoch, cfg, dist.size)
                checkpoint.write_checkpoint(checkpoint.checkpoint_path(cfg.checkpoint_dir, metrics.epoch), state)

    # A resumed run that had already finished trains no epoch: measure the model as it is.
    val_loss, val_acc = (last.val_loss, last.val_acc) if last else evaluate(model, val_loader, dist, device)
    mine = param_checksum(model)
    summary = Summary(world_size=dist.size, epochs=cfg.epochs, final_val_loss=val_loss,
                      final_val_acc=val_acc, samples_per_sec=total.per_sec, param_checksum=mine,
                      rank_checksums=dist.allgather_object(mine),  # Horovod: every replica's hash
                      layout=dist.allgather_object(asdict(my_slot(dist))))
    if is_root:
        report_summary(summary, model, cfg)
    return summary


def report_epoch(metrics: EpochMetrics, cfg: TrainConfig) -> None:
    """Rank 0: one concise line per epoch, and one JSON line in ``metrics.jsonl``."""
    print(f"epoch {metrics.epoch}/{cfg.epochs}  train_loss {metrics.train_loss:.4f}  "
          f"val_loss {metrics.val_loss:.4f}  val_acc {metrics.val_acc:.4f}  lr {metrics.lr:.4g}  "
          f"{metrics.samples_per_sec:,.0f} samples/s  ({metrics.world_size} ranks, "
          f"{metrics.elapsed_s:.1f}s)", flush=True)
    if cfg.out is not None:
        with (cfg.out / "metrics.jsonl").open("a") as handle:
            handle.write(json.dumps(asdict(metrics)) + "\n")


def report_summary(summary: Summary, model: nn.Module, cfg: TrainConfig) -> None:
    """Rank 0: the final line, ``summary.json`` and ``model.pt``."""
    identical = len(set(summary.rank_checksums)) == 1
    print(f"done: {summary.world_size} ranks, val_acc {summary.final_val_acc:.4f}, "
          f"val_loss {summary.final_val_loss:.4f}, {summary.samples_per_sec:,.0f} samples/s, "
          f"replicas identical: {identical}", flush=True)
    if cfg.out is not None:
        _write_json(cfg.out / "summary.json", asdict(summary))
        torch.save(model.state_dict(), cfg.out / "model.pt")
