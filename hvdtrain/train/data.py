"""Datasets by spec (built-in name, ``npz:``/``csv:`` file, or ``module:function``) and how each
rank gets its shard."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from hvdtrain.errors import HvdtrainError
from hvdtrain.train.files import read_csv, read_npz
from hvdtrain.train.specs import call_with_known, is_spec, load_callable

SPLIT_SEED = 1234  # built-in and file datasets split the same way whatever --seed is
VAL_FRACTION = 0.2

Samples = Dataset[Any]  # yields (input, label) pairs
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mean loss of a batch


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample score: 1 where the top class is the label."""
    return (outputs.argmax(dim=1) == targets).float()


@dataclass(frozen=True)
class DataSplit:
    train: Samples
    val: Samples
    input_shape: tuple[int, ...]
    num_classes: int
    loss: LossFn = F.cross_entropy
    metric: LossFn = accuracy  # per-sample scores; val_acc is their mean


def split_tensors(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[
        TensorDataset, TensorDataset]:
    """A seeded random train/val split of paired tensors."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def _from_tensors(train: TensorDataset, val: TensorDataset | None) -> DataSplit:
    if val is None:
        train, val = split_tensors(train.tensors[0], train.tensors[1], VAL_FRACTION, SPLIT_SEED)
    labels = torch.cat([train.tensors[1], val.tensors[1]])
    return DataSplit(train, val, tuple(train.tensors[0].shape[1:]), int(labels.max()) + 1)


def digits(seed: int) -> DataSplit:
    """The 1797 real 8x8 handwritten digits shipped with scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return _from_tensors(TensorDataset(x, torch.tensor(bunch.target, dtype=torch.long)), None)


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


def _num_classes(dataset: Samples) -> int:
    if isinstance(dataset, TensorDataset):
        return int(dataset.tensors[1].max()) + 1
    return int(max(int(dataset[i][1]) for i in range(len(dataset)))) + 1  # type: ignore[arg-type]


def from_user_result(result: Any, spec: str) -> DataSplit:
    """A ``(train, val)`` pair, or a dict with train, val and optional loss, metric, num_classes."""
    parts: Mapping[str, Any]
    if isinstance(result, (tuple, list)) and len(result) == 2:
        parts = {"train": result[0], "val": result[1]}
    elif isinstance(result, Mapping) and {"train", "val"} <= set(result):
        parts = result
    else:
        raise HvdtrainError(f"--dataset {spec} returned {type(result).__name__}",
                            "return (train, val) Datasets, or a dict with 'train' and 'val'")
    train, val = parts["train"], parts["val"]
    if not isinstance(train, Dataset) or not isinstance(val, Dataset) or not len(train):  # type: ignore[arg-type]
        raise HvdtrainError(f"--dataset {spec}: train and val must be non-empty torch Datasets",
                            "wrap tensors in torch.utils.data.TensorDataset")
    shape = tuple(torch.as_tensor(train[0][0]).shape)
    extras = {key: parts[key] for key in ("loss", "metric") if parts.get(key) is not None}
    return DataSplit(train, val, shape, int(parts.get("num_classes") or _num_classes(train)), **extras)


def load_dataset(spec: str, seed: int, label_column: str = "label") -> DataSplit:
    if spec in DATASETS:
        return DATASETS[spec](seed)
    kind, _, path = spec.partition(":")
    if kind == "npz":
        return _from_tensors(*read_npz(Path(path)))
    if kind == "csv":
        return _from_tensors(read_csv(Path(path), label_column), None)
    if is_spec(spec):
        function = load_callable(spec, "--dataset")
        return from_user_result(call_with_known(function, spec, "--dataset", seed=seed), spec)
    raise HvdtrainError(f"unknown dataset {spec!r}",
                        f"use --dataset {' or '.join(sorted(DATASETS))}, npz:PATH, csv:PATH or module:function")


def val_shard(dataset: Samples, rank: int, size: int) -> Subset[Any]:
    """Every ``size``-th sample from ``rank``, without padding: the shards partition the set
    exactly, so summed metrics equal a single process's."""
    return Subset(dataset, range(rank, len(dataset), size))  # type: ignore[arg-type]
