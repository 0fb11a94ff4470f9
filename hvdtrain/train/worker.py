"""The per-rank program behind ``hvdtrain train``: set up, resume, train, record."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.layout import Slot
from hvdtrain.job.progress import ProgressFile
from hvdtrain.job.signals import PREEMPTED_EXIT
from hvdtrain.train import checkpoint, records
from hvdtrain.train.config import TrainConfig, choose_device, claim_cores
from hvdtrain.train.data import load_dataset
from hvdtrain.train.dist import Dist, ElasticHooks, ReduceOptions, init_dist, run_elastic
from hvdtrain.train.loop import (
    EpochMetrics,
    Runtime,
    Throughput,
    build_train_loader,
    build_val_loader,
    evaluate,
    fit,
    param_checksum,
)
from hvdtrain.train.models import build_model
from hvdtrain.train.preempt import Preempted, Preemption, StopRequest
from hvdtrain.train.records import Summary
from hvdtrain.train.steps import ProgressBar, StepCallback, record_progress

log = logging.getLogger(__name__)


def my_slot(dist: Dist) -> Slot:
    return Slot(rank=dist.rank, local_rank=dist.local_rank, local_size=dist.local_size,
                cross_rank=dist.cross_rank, cross_size=dist.cross_size, host=socket.gethostname())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, dist: Dist) -> tuple[int, int]:
    """Rank 0 loads the newest good checkpoint; every rank learns the outcome, so a bad one stops
    all ranks with the same message instead of leaving them waiting. Then every rank takes rank
    0's state and proves it did. Returns (epochs done, steps done in the next epoch)."""
    wanted = cfg.resume_from is not None or cfg.auto_resume
    outcome: tuple[tuple[int, int], tuple[str, str] | None] = ((0, 0), None)
    if wanted and dist.rank == 0:
        try:
            outcome = (load_newest(model, optimizer, cfg), None)
        except HvdtrainError as exc:
            outcome = ((0, 0), (exc.problem, exc.hint))
    place_done, failure = dist.broadcast_object(outcome) if wanted else outcome
    if failure is not None:
        raise HvdtrainError(*failure)
    dist.broadcast_state(model, optimizer)
    sums = dist.allgather_object(checkpoint.state_checksum(model, optimizer))  # Horovod: compare replicas
    differing = [rank for rank, value in enumerate(sums) if value != sums[0]]
    if differing:
        raise HvdtrainError(f"after restoring, rank(s) {differing} hold different parameters or optimizer "
                            "state than rank 0", "check that every rank runs the same model and optimizer")
    return place_done


def load_newest(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> tuple[int, int]:
    """Rank 0: load the newest good checkpoint; with --auto-resume and none yet, start fresh."""
    directory = cfg.resume_from or cfg.checkpoint_dir
    assert directory is not None  # TrainConfig requires --checkpoint-dir with --auto-resume
    if cfg.resume_from is None and not (directory.is_dir() and checkpoint.list_checkpoints(directory)):
        log.info("no checkpoint in %s yet: starting from scratch", directory)
        return 0, 0
    path, state, skipped = checkpoint.read_latest_good(directory)
    for problem in skipped:
        log.warning("%s; using %s", problem, path.name)
    if state["config"]["model"] != cfg.model:
        raise HvdtrainError(f"{path} holds model {state['config']['model']!r}, not {cfg.model!r}",
                            f"resume with --model {state['config']['model']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from %s (epoch %s done, %s steps into the next)", path, state["epoch"], state["step"])
    return int(state["epoch"]), int(state["step"])


def save_preempted(model: nn.Module, optimizer: torch.optim.Optimizer, rt: Runtime, stop: Preempted) -> None:
    """Every rank stopped at the same step; rank 0 saves exactly that step."""
    cfg, dist = rt.cfg, rt.dist
    if dist.rank == 0 and cfg.checkpoint_dir is not None:
        path = checkpoint.checkpoint_path(cfg.checkpoint_dir, stop.epoch, stop.step)
        state = checkpoint.build_checkpoint(model, optimizer, stop.epoch, cfg, dist.size, step=stop.step)
        checkpoint.write_checkpoint(path, state, keep=cfg.keep_checkpoints)
        log.info("hvdtrain: stopping on %s/TERM: saved %s; exit %d", cfg.preempt_signal, path, PREEMPTED_EXIT)


def place(model: nn.Module, cfg: TrainConfig, dist: Dist) -> str:
    """Bind this rank to its cores when asked, set its torch threads and device; move the model there."""
    torch.set_num_threads(claim_cores(os.environ, cfg.threads_per_rank, dist.local_rank, dist.local_size))
    device = choose_device(cfg.device, torch.cuda.is_available(), dist.local_rank, cfg.amp)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # Horovod: one GPU per local rank
    model.to(device)
    return device


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader[Any], rt: Runtime,
                 start_epoch: int, start_step: int = 0, elastic: ElasticHooks | None = None
                 ) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
    """Epochs from ``start_epoch`` on; rank 0 reports each one and writes its checkpoint."""
    cfg, dist = rt.cfg, rt.dist
    is_root = dist.rank == 0
    val_loader = build_val_loader(rt.data.val, dist, cfg.batch_size)  # the shard of this world
    last: EpochMetrics | None = None
    total = Throughput(0, 0.0)
    for metrics, speed in fit(model, optimizer, train_loader, val_loader, rt, start_epoch, start_step=start_step):
        last, total = metrics, Throughput(total.samples + speed.samples, total.seconds + speed.seconds)
        if is_root:
            records.report_epoch(metrics, cfg)
            if cfg.checkpoint_dir is not None:
                state = checkpoint.build_checkpoint(model, optimizer, metrics.epoch, cfg, dist.size)
                checkpoint.write_checkpoint(checkpoint.checkpoint_path(cfg.checkpoint_dir, metrics.epoch), state,
                                            keep=cfg.keep_checkpoints)
        if elastic is not None:
            elastic.end_epoch(metrics.epoch)
    return last, total, val_loader


@dataclass(frozen=True)
class Job:
    """One rank, set up: its model and optimizer, where it starts, and what every step needs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    rt: Runtime
    train_loader: DataLoader[Any]
    start: tuple[int, int]  # (epochs done, steps done in the next) from a checkpoint


def run_worker(cfg: TrainConfig, env: Mapping[str, str], argv: Sequence[str],
               stop_request: StopRequest | None = None) -> Summary:
    """Train on this rank; rank 0 writes metrics, checkpoints, the summary and the run record.
    Raises ``Preempted`` (after rank 0 saved the step) when every rank agreed to stop."""
    started = records.now()
    job = set_up(cfg, env, stop_request)
    last, total, val_loader = train_elastic(job) if cfg.elastic else train_to_the_end(job)
    summary = summarize(job, last, total, val_loader)
    if job.rt.dist.rank == 0:  # read again: an elastic run may have a new rank 0
        records.report_summary(summary, job.model, cfg)
        if cfg.out is not None:
            record = records.build_run_record(cfg, summary, argv, started, records.now(), records.versions(),
                                              records.git_commit(Path.cwd()))
            records.write_json(cfg.out / "run.json", record)
    return summary


def set_up(cfg: TrainConfig, env: Mapping[str, str], stop_request: StopRequest | None) -> Job:
    """Data, model, the job, the device, the step callbacks, the optimizer, and the checkpoint."""
    data = load_dataset(cfg.dataset, cfg.seed, cfg.label_column)  # bad specs fail before joining the job
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    dist = init_dist(env)
    device = place(model, cfg, dist)  # checks --device and --amp before anything uses them
    on_step: list[StepCallback] = [record_progress(ProgressFile(env))]
    if stop_request is not None:
        on_step.append(Preemption(dist, stop_request, cfg.preempt_check_every))
    if dist.rank == 0 and sys.stdout.isatty():
        on_step.append(ProgressBar(cfg.epochs))
    rt = Runtime(cfg, dist, device, data, torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None,
                 tuple(on_step), elastic=cfg.elastic)
    optimizer = dist.wrap_optimizer(build_optimizer(model, cfg), model,
                                    ReduceOptions(cfg.compression, cfg.op, cfg.accumulate, cfg.bucket_mb))
    start = restore(model, optimizer, cfg, dist)
    if dist.rank == 0 and cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        if start == (0, 0):
            (cfg.out / "metrics.jsonl").write_text("")
    return Job(model, optimizer, rt, build_train_loader(data.train, dist, cfg), start)


def train_to_the_end(job: Job) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
    """Every epoch left; on preemption, rank 0 saves the exact step and ``Preempted`` goes on up."""
    try:
        return train_epochs(job.model, job.optimizer, job.train_loader, job.rt, *job.start)
    except Preempted as stop:
        save_preempted(job.model, job.optimizer, job.rt, stop)
        raise


def train_elastic(job: Job) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
    """Every epoch left, under Horovod elastic: a lost worker rolls the rest back to the last commit."""
    dist = job.rt.dist

    def on_reset() -> None:
        log.info("elastic reset: %d rank(s) now, this is rank %d", dist.size, dist.rank)

    return run_elastic(  # type: ignore[no-any-return]
        job.model, job.optimizer, job.train_loader.sampler, job.start[0], job.rt.cfg.commit_every,
        lambda epoch, hooks: train_epochs(job.model, job.optimizer, job.train_loader,
                                          replace(job.rt, on_step=(*job.rt.on_step, hooks)), epoch, elastic=hooks),
        on_reset)


def summarize(job: Job, last: EpochMetrics | None, total: Throughput, val_loader: DataLoader[Any]) -> Summary:
    """Final metrics, and every replica's parameter checksum and place, gathered from all ranks."""
    cfg, dist = job.rt.cfg, job.rt.dist
    # The last epoch is always evaluated; a resumed run that had already finished trains no epoch.
    if last is not None and last.val_loss is not None and last.val_acc is not None:
        val_loss, val_acc = last.val_loss, last.val_acc
    else:
        val_loss, val_acc = evaluate(job.model, val_loader, job.rt)
    mine = param_checksum(job.model)
    return Summary(world_size=dist.size, epochs=cfg.epochs, final_val_loss=val_loss,
                   final_val_acc=val_acc, samples_per_sec=total.per_sec, param_checksum=mine,
                   rank_checksums=dist.allgather_object(mine),  # Horovod: every replica's hash
                   layout=dist.allgather_object(asdict(my_slot(dist))))
