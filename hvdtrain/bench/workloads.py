"""Benchmark workloads, as ``module:function`` specs that ``hvdtrain train --model/--dataset`` take.

- ``resnet``: a small ResNet-like CNN on 3x16x16 images (compute-bound);
- ``wide_mlp``: ~50M parameters on 1024 features (communication-bound);
- ``deep_narrow``: 48 small layers (many small tensors: latency-bound).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

CLASSES = 10


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def resnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), Block(32), nn.MaxPool2d(2), Block(32),
                         nn.MaxPool2d(2), Block(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES))


def wide_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 3072), nn.ReLU(),
                         nn.Linear(3072, CLASSES))


def deep_narrow() -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(64, 64)]
    for _ in range(47):
        layers += [nn.ReLU(), nn.Linear(64, 64)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(64, CLASSES))


def _random(samples: int, shape: tuple[int, ...], seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Seeded random inputs and labels; sized so the timed epoch takes several seconds on one
    core (tens of steps per rank at np=2), long enough that scheduling hiccups average out."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *shape), generator=generator)
    y = torch.randint(0, CLASSES, (samples,), generator=generator)
    return TensorDataset(x, y), TensorDataset(x[:64], y[:64])


def images(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    return _random(4096, (3, 16, 16), seed)


def wide_features(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    return _random(512, (1024,), seed)


def narrow_features(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    return _random(8192, (64,), seed)


# name -> (model spec, dataset spec)
WORKLOADS = {
    "resnet": ("hvdtrain.bench.workloads:resnet", "hvdtrain.bench.workloads:images"),
    "wide_mlp": ("hvdtrain.bench.workloads:wide_mlp", "hvdtrain.bench.workloads:wide_features"),
    "deep_narrow": ("hvdtrain.bench.workloads:deep_narrow", "hvdtrain.bench.workloads:narrow_features"),
}
