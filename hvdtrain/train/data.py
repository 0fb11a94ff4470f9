"""Built-in datasets and how each rank gets its shard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from hvdtrain.errors import HvdtrainError

SPLIT_SEED = 1234  # the digits train/val split never changes with --seed
VAL_FRACTION = 0.2


Samples = Dataset[Any]  # yields (input, label) pairs


@dataclass(frozen=True)
class DataSplit:
    train: Samples
    val: Samples
    input_shape: tuple[int, ...]
    num_classes: int


def split_tensors(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[
        TensorDataset, TensorDataset]:
    """A seeded random train/val split of paired tensors."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def digits(seed: int) -> DataSplit:
    """The 1797 real 8x8 handwritten digits shipped with scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, val = split_tensors(x, y, VAL_FRACTION, SPLIT_SEED)
    return DataSplit(train, val, (1, 8, 8), 10)


def synthetic(seed: int, samples: int = 2048, input_shape: tuple[int, ...] = (1, 8, 8),
              num_classes: int = 10) -> DataSplit:
    """Seeded random inputs with labels from a fixed random linear map (so there is signal)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *input_shape), generator=generator)
    weights = torch.randn((x[0].numel(), num_classes), generator=generator)
    y = (x.flatten(1) @ weights).argmax(dim=1)
    train, val = split_tensors(x, y, VAL_FRACTION, seed)
    return DataSplit(train, val, input_shape, num_classes)


DATASETS: dict[str, Callable[[int], DataSplit]] = {"digits": digits, "synthetic": synthetic}


def load_dataset(name: str, seed: int) -> DataSplit:
    factory = DATASETS.get(name)
    if factory is None:
        raise HvdtrainError(f"unknown dataset {name!r}", f"use --dataset {' or '.join(sorted(DATASETS))}")
    return factory(seed)


def val_shard(dataset: Samples, rank: int, size: int) -> Subset[Any]:
    """Every ``size``-th sample from ``rank``, without padding: the shards partition the set
    exactly, so summed metrics equal a single process's."""
    return Subset(dataset, range(rank, len(dataset), size))  # type: ignore[arg-type]
