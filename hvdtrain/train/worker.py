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
from hvdtrain.run.run import Run
from hvdtrain.train import records
from hvdtrain.train.config import TrainConfig, choose_device, claim_cores, detect_gpus
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
from hvdtrain.train.records import Summary
from hvdtrain.train.steps import ProgressBar, StepCallback

log = logging.getLogger(__name__)


def my_slot(dist: Dist) -> Slot:
    return Slot(rank=dist.rank, local_rank=dist.local_rank, local_size=dist.local_size,
                cross_rank=dist.cross_rank, cross_size=dist.cross_size, host=socket.gethostname())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def place(model: nn.Module, cfg: TrainConfig, dist: Dist) -> str:
    """Bind this rank to its cores when asked, set its torch threads and device; move the model there."""
    device = choose_device(cfg.device, detect_gpus(os.environ), dist.local_rank, dist.local_size, cfg.amp)
    claim_cores(os.environ, cfg.threads_per_rank, dist, device)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # Horovod: one GPU per rank
    model.to(device)
    return device


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader[Any], rt: Runtime,
                 run: Run, elastic: ElasticHooks | None = None
                 ) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
    """The epochs ``run`` has left; each one is reported, logged and checkpointed."""
    cfg, dist = rt.cfg, rt.dist
    val_loader = build_val_loader(rt.data.val, dist, cfg.batch_size)  # the shard of this world
    last: EpochMetrics | None = None
    total = Throughput(0, 0.0)
    for metrics, speed in fit(model, optimizer, train_loader, val_loader, rt, run):
        last, total = metrics, Throughput(total.samples + speed.samples, total.seconds + speed.seconds)
        if dist.rank == 0:
            records.report_epoch(metrics, cfg)
        values = {key: value for key, value in asdict(metrics).items() if key not in ("epoch", "lr")}
        run.log(**values)  # the epoch's line in metrics.jsonl (the same on every rank)
        run.save()  # an epoch checkpoint, with --checkpoint-dir
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
    run: Run


def run_worker(cfg: TrainConfig, env: Mapping[str, str], argv: Sequence[str]) -> Summary:
    """Train on this rank; rank 0 writes metrics, checkpoints, the summary and the run record.
    Raises ``Preempted`` (after rank 0 saved the step) when every rank agreed to stop."""
    started = records.now()
    job = set_up(cfg, env)
    last, total, val_loader = train_elastic(job) if cfg.elastic else \
        train_epochs(job.model, job.optimizer, job.train_loader, job.rt, job.run)
    summary = summarize(job, last, total, val_loader)
    if job.rt.dist.rank == 0:  # read again: an elastic run may have a new rank 0
        records.report_summary(summary, job.model, cfg)
        if cfg.out is not None:
            record = records.build_run_record(cfg, summary, argv, started, records.now(), records.versions(),
                                              records.git_commit(Path.cwd()))
            records.write_json(cfg.out / "run.json", record)
    return summary


def set_up(cfg: TrainConfig, env: Mapping[str, str]) -> Job:
    """Data, model, the job, the device, the step callbacks, the optimizer, and the run (which
    resumes from a checkpoint when asked)."""
    data = load_dataset(cfg.dataset, cfg.seed, cfg.label_column)  # bad specs fail before joining the job
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    dist = init_dist(env)
    device = place(model, cfg, dist)  # checks --device and --amp before anything uses them
    on_step: list[StepCallback] = []
    if dist.rank == 0 and sys.stdout.isatty():
        on_step.append(ProgressBar(cfg.epochs))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    rt = Runtime(cfg, dist, device, data, scaler, tuple(on_step))
    if cfg.op == "adasum" and device.startswith("cuda") and dist.rank == 0 and cfg.lr_scaling:
        log.info(f"Adasum on GPUs averages within each node first: LR x {dist.local_size} (ranks per node)")
    optimizer = dist.wrap_optimizer(build_optimizer(model, cfg), model,
                                    ReduceOptions(cfg.compression, cfg.op, cfg.accumulate, cfg.bucket_mb))
    dist.broadcast_state(model, optimizer)  # Horovod: every replica starts from rank 0's
    resume: bool | Path = cfg.resume_from if cfg.resume_from is not None else cfg.auto_resume
    objects: dict[str, Any] = {"model": model, "optimizer": optimizer, **({"scaler": scaler} if scaler else {})}
    run = Run(cfg.out or cfg.checkpoint_dir, checkpoint_dir=cfg.checkpoint_dir, resume=resume,
              keep=cfg.keep_checkpoints, check_every=cfg.preempt_check_every, log_every=cfg.log_every,
              config=cfg.as_plain_dict(), **objects)
    trained = run.values["config"]["model"]
    if trained != cfg.model:
        raise HvdtrainError(f"{run.resumed_from} holds model {trained!r}, not {cfg.model!r}",
                            f"resume with --model {trained}")
    run.values["config"] = cfg.as_plain_dict()  # the checkpoints from now on hold this run's options
    return Job(model, optimizer, rt, build_train_loader(data.train, dist, cfg), run)


def train_elastic(job: Job) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
    """Every epoch left, under Horovod elastic: a lost worker rolls the rest back to the last commit."""
    dist = job.rt.dist

    def on_reset() -> None:
        log.info("elastic reset: %d rank(s) now, this is rank %d", dist.size, dist.rank)

    def body(epoch: int, hooks: ElasticHooks) -> tuple[EpochMetrics | None, Throughput, DataLoader[Any]]:
        job.run.rewind(epoch)  # the sampler keeps what is left of the epoch
        return train_epochs(job.model, job.optimizer, job.train_loader,
                            replace(job.rt, on_step=(*job.rt.on_step, hooks)), job.run, elastic=hooks)

    return run_elastic(  # type: ignore[no-any-return]
        job.model, job.optimizer, job.train_loader.sampler, job.run.epoch, job.rt.cfg.commit_every, body, on_reset)


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
                   layout=dist.allgather_object({**asdict(my_slot(dist)), "device": job.rt.device}))
