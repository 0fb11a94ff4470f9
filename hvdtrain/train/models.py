"""Built-in models, looked up by name in a registry a ``module:function`` spec can join later."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hvdtrain.errors import HvdtrainError
from hvdtrain.train.specs import call_with_known, is_spec, load_callable

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    """Two hidden ReLU layers on the flattened input."""
    features = 1
    for dim in input_shape:
        features *= dim
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Two 3x3 conv layers, one 2x2 pooling, two dense layers. No batch norm and no dropout:
    replicas stay bit-identical and every step is deterministic on CPU."""
    channels, height, width = input_shape
    flat = 32 * (height // 2) * (width // 2)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


MODELS: dict[str, ModelFactory] = {"mlp": mlp, "cnn": cnn}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A built-in model by name, or ``module:function`` called with whichever of ``input_shape``
    and ``num_classes`` it accepts."""
    if is_spec(name):
        model = call_with_known(load_callable(name, "--model"), name, "--model", input_shape=input_shape,
                                num_classes=num_classes)
        if not isinstance(model, nn.Module):
            raise HvdtrainError(f"--model {name} returned {type(model).__name__}, not a torch.nn.Module",
                                "return the model instance, e.g. return MyNet()")
        return model
    factory = MODELS.get(name)
    if factory is None:
        raise HvdtrainError(f"unknown model {name!r}",
                            f"use --model {' or '.join(sorted(MODELS))}, or module:function for your own")
    if name == "cnn" and len(input_shape) != 3:
        raise HvdtrainError(f"model cnn needs images (channels, height, width), got shape {input_shape}",
                            "use --model mlp for flat features")
    return factory(input_shape, num_classes)
