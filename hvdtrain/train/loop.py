"""The data-parallel training loop, flat enough to read top to bottom."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from hvdtrain.run.run import Run
from hvdtrain.train.config import TrainConfig, epoch_seed, lr_at, lr_scale
from hvdtrain.train.data import DataSplit, Samples, val_shard
from hvdtrain.train.dist import Dist, elastic_sampler
from hvdtrain.train.steps import StepCallback, StepEnd

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Runtime:
    """What every step needs besides the model and optimizer."""

    cfg: TrainConfig
    dist: Dist
    device: str
    data: DataSplit
    scaler: Any = None  # torch.amp.GradScaler with --amp fp16
    on_step: tuple[StepCallback, ...] = ()  # called after every optimizer step, in order (train/steps.py)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)


@dataclass(frozen=True)
class EpochMetrics:
    """One line of ``metrics.jsonl``; validation fields are None on epochs not evaluated."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    samples_per_sec: float
    world_size: int
    elapsed_s: float


@dataclass(frozen=True)
class Throughput:
    samples: int
    seconds: float

    @property
    def per_sec(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def param_checksum(model: nn.Module) -> str:
    """sha256 of every state_dict tensor as float32 bytes, in state_dict order."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_train_loader(train: Samples, dist: Dist, cfg: TrainConfig) -> DataLoader[Batch]:
    # Horovod: each rank reads its own shard; all shards have the same length, and dropping
    # the last partial batch keeps every rank's step count and batch size equal. Elastic runs
    # use Horovod's sampler, which re-shards what is left of the epoch when the world changes.
    sampler: Any = elastic_sampler(train, cfg.shuffle, cfg.seed) if cfg.elastic else DistributedSampler(
        train, num_replicas=dist.size, rank=dist.rank, shuffle=cfg.shuffle, seed=cfg.seed)
    return DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)


def build_val_loader(val: Samples, dist: Dist, batch_size: int) -> DataLoader[Batch]:
    return DataLoader(val_shard(val, dist.rank, dist.size), batch_size=batch_size)


def steps_per_epoch(loader: DataLoader[Batch], accumulate: int) -> int:
    """Optimizer steps per epoch: micro-batches that do not fill a whole accumulation are skipped,
    so Horovod's count of backward passes starts every epoch at zero."""
    return len(loader) // accumulate


def optimizer_step(optimizer: torch.optim.Optimizer, model: nn.Module, rt: Runtime) -> None:
    """Step; with clipping or fp16 loss scaling, first finish the all-reduce so the averaged
    gradients are the ones clipped and unscaled, then step without reducing them again."""
    clip = rt.cfg.clip_grad_norm
    if rt.scaler is None and clip is None:
        optimizer.step()  # Horovod: all-reduces the gradients first
        return
    rt.dist.synchronize(optimizer)
    if rt.scaler is not None:
        rt.scaler.unscale_(optimizer)
    if clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    with rt.dist.skip_synchronize(optimizer):
        if rt.scaler is not None:
            rt.scaler.step(optimizer)
            rt.scaler.update()
        else:
            optimizer.step()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[Batch],
                lr_for_step: Callable[[int], float], rt: Runtime, run: Run) -> tuple[torch.Tensor, int]:
    """What is left of this epoch's pass over this rank's shard (``run.batches`` skips what a
    preempted run already did, and stops every rank at the same step on a signal); returns (sum
    of sample losses, still on the device, and samples)."""
    model.train()
    accumulate = rt.cfg.accumulate
    steps = steps_per_epoch(loader, accumulate)  # micro-batches short of a whole step are skipped
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    samples = step_samples = 0
    for x, y in run.batches(loader, limit=steps * accumulate):
        micro = run.batch % accumulate  # micro-steps: gradients add up; Horovod reduces once, in step()
        if micro == 0:
            optimizer.zero_grad()
            step_samples = 0
        x, y = x.to(rt.device), y.to(rt.device)
        with rt.autocast():
            loss = rt.data.loss(model(x), y)
        scaled = loss / accumulate
        (rt.scaler.scale(scaled) if rt.scaler is not None else scaled).backward()
        loss_sum += loss.detach() * len(y)  # no .item(): the CPU does not wait for the GPU here
        step_samples += len(y)
        run.log(loss=loss)
        if micro < accumulate - 1:
            continue
        step = run.batch // accumulate
        for group in optimizer.param_groups:
            group["lr"] = lr_for_step(step)
        optimizer_step(optimizer, model, rt)
        samples += step_samples
        for callback in rt.on_step:
            callback(StepEnd(epoch=run.epoch, step=step + 1, steps=steps, samples=step_samples))
    return loss_sum, samples


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[Batch], rt: Runtime) -> tuple[float, float]:
    """Validation loss and metric over the whole set, exactly: sums across ranks, then divide. The
    sums stay on the device until the one all-reduce."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)
    for x, y in loader:
        x, y = x.to(rt.device), y.to(rt.device)
        with rt.autocast():
            outputs = model(x)
        outputs = outputs.float()
        totals[0] += rt.data.loss(outputs, y) * len(y)
        totals[1] += rt.data.metric(outputs, y).sum()
        totals[2] += len(y)
    loss_sum, score, count = rt.dist.allreduce_sum(totals.cpu(), name="val_totals").tolist()
    return loss_sum / count, score / count


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader[Batch],
        val_loader: DataLoader[Batch], rt: Runtime, run: Run) -> Iterator[tuple[EpochMetrics, Throughput]]:
    """Train the epochs ``run`` has left (the first from where it stopped), yielding each epoch's
    metrics when it ends."""
    cfg, dist = rt.cfg, rt.dist
    started = time.perf_counter()
    steps = steps_per_epoch(train_loader, cfg.accumulate)
    scale = lr_scale(cfg, dist.size, dist.local_size, rt.device.startswith("cuda"))
    for epoch in run.epochs(cfg.epochs):
        # Same randomness for epoch e whether or not the run was resumed (the sampler's order is
        # set by run.batches).
        torch.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))

        def lr_for_step(step: int, first: int = epoch * steps) -> float:
            return lr_at(first + step, steps, cfg, scale)

        tic = time.perf_counter()
        loss_sum, samples = train_epoch(model, optimizer, train_loader, lr_for_step, rt, run)
        seconds = time.perf_counter() - tic

        # Horovod: one all-reduce turns per-rank sums into global training metrics.
        local = torch.stack([loss_sum.cpu(), torch.tensor(float(samples), dtype=torch.float64)])
        global_loss, global_samples = dist.allreduce_sum(local, name="train_totals").tolist()
        last = epoch + 1 == cfg.epochs
        val_loss, val_acc = evaluate(model, val_loader, rt) if last or (epoch + 1) % cfg.eval_every == 0 \
            else (None, None)
        speed = Throughput(int(global_samples), seconds)
        yield EpochMetrics(epoch=epoch + 1, train_loss=global_loss / max(global_samples, 1.0),
                           val_loss=val_loss, val_acc=val_acc, lr=optimizer.param_groups[0]["lr"],
                           samples_per_sec=speed.per_sec, world_size=dist.size,
                           elapsed_s=time.perf_counter() - started), speed
