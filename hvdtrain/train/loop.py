"""The data-parallel training loop, flat enough to read top to bottom."""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import click
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from hvdtrain.train.config import TrainConfig, epoch_seed, lr_at
from hvdtrain.train.data import Samples, val_shard
from hvdtrain.train.dist import Dist

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class EpochMetrics:
    """One line of ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
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
    # the last partial batch keeps every rank's step count and batch size equal.
    sampler: DistributedSampler[Batch] = DistributedSampler(
        train, num_replicas=dist.size, rank=dist.rank, shuffle=cfg.shuffle, seed=cfg.seed)
    return DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)


def build_val_loader(val: Samples, dist: Dist, batch_size: int) -> DataLoader[Batch]:
    return DataLoader(val_shard(val, dist.rank, dist.size), batch_size=batch_size)


def _batches(loader: DataLoader[Batch], label: str, show_progress: bool) -> contextlib.AbstractContextManager[
        Iterable[Batch]]:
    if show_progress:
        return click.progressbar(loader, label=label, file=sys.stdout)  # type: ignore[return-value]
    return contextlib.nullcontext(loader)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader[Batch],
                lr_for_step: Callable[[int], float], device: str, show_progress: bool,
                label: str) -> tuple[float, int, float]:
    """One pass over this rank's shard; returns (sum of sample losses, samples, last LR)."""
    model.train()
    loss_sum, samples, lr = 0.0, 0, 0.0
    with _batches(loader, label, show_progress) as batches:
        for step, (x, y) in enumerate(batches):
            lr = lr_for_step(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()  # Horovod: all-reduces the gradients first
            loss_sum += loss.item() * len(y)
            samples += len(y)
    return loss_sum, samples, lr


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[Batch], dist: Dist, device: str) -> tuple[float, float]:
    """Validation loss and accuracy over the whole set, exactly: sums across ranks, then divide."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for x, y in loader:
        logits = model(x.to(device))
        y = y.to(device)
        totals[0] += F.cross_entropy(logits, y, reduction="sum").item()
        totals[1] += (logits.argmax(dim=1) == y).sum().item()
        totals[2] += len(y)
    loss_sum, correct, count = dist.allreduce_sum(totals, name="val_totals").tolist()
    return loss_sum / count, correct / count


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader[Batch],
        val_loader: DataLoader[Batch], dist: Dist, cfg: TrainConfig, device: str,
        start_epoch: int, show_progress: bool) -> Iterator[tuple[EpochMetrics, Throughput]]:
    """Train epochs ``start_epoch+1 .. cfg.epochs``, yielding each epoch's metrics when it ends."""
    started = time.perf_counter()
    steps_per_epoch = len(train_loader)
    for epoch in range(start_epoch, cfg.epochs):
        # Same sample order and randomness for epoch e whether or not the run was resumed.
        sampler = train_loader.sampler
        assert isinstance(sampler, DistributedSampler)
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch_seed(cfg.seed, epoch, dist.rank))

        def lr_for_step(step: int, first: int = epoch * steps_per_epoch) -> float:
            return lr_at(first + step, steps_per_epoch, cfg, dist.size)

        tic = time.perf_counter()
        loss_sum, samples, lr = train_epoch(model, optimizer, train_loader, lr_for_step, device,
                                            show_progress, f"epoch {epoch + 1}/{cfg.epochs}")
        seconds = time.perf_counter() - tic

        # Horovod: one all-reduce turns per-rank sums into global training metrics.
        totals = dist.allreduce_sum(torch.tensor([loss_sum, float(samples)], dtype=torch.float64),
                                    name="train_totals")
        global_loss, global_samples = totals.tolist()
        val_loss, val_acc = evaluate(model, val_loader, dist, device)
        speed = Throughput(int(global_samples), seconds)
        yield EpochMetrics(epoch=epoch + 1, train_loss=global_loss / max(global_samples, 1.0),
                           val_loss=val_loss, val_acc=val_acc, lr=lr, samples_per_sec=speed.per_sec,
                           world_size=dist.size, elapsed_s=time.perf_counter() - started), speed
