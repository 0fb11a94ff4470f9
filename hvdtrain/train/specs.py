"""``module:function`` specs: the user's own models and datasets, imported by name."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from hvdtrain.errors import HvdtrainError


def is_spec(text: str) -> bool:
    module, sep, function = text.partition(":")
    return bool(sep) and bool(module) and bool(function) and all(
        part.isidentifier() for part in [*module.split("."), function])


def load_callable(spec: str, flag: str) -> Callable[..., Any]:
    """Import ``pkg.module:function`` (``is_spec``) from PYTHONPATH or the working directory. The
    working directory comes after the installed packages, and Horovod is imported first: a
    ``horovod/`` or ``torch/`` folder where the job starts cannot take their place."""
    module_name, _, function_name = spec.partition(":")
    if importlib.util.find_spec("horovod") is not None:
        importlib.import_module("horovod.torch")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise HvdtrainError(f"{flag} {spec}: module {exc.name!r} not found",
                            "run from the directory that holds it, or add that directory to PYTHONPATH") from None
    except Exception as exc:  # the user's module failed while importing
        raise HvdtrainError(f"{flag} {spec}: importing {module_name} raised {type(exc).__name__}: {exc}",
                            f"fix {module_name}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise HvdtrainError(f"{flag} {spec}: module {module_name} has no attribute {function_name!r}",
                            f"define {function_name} in {module.__file__}")
    if not callable(function):
        raise HvdtrainError(f"{flag} {spec}: {function_name} is a {type(function).__name__}, not a function",
                            "point the spec at a function that builds it")
    return function  # type: ignore[no-any-return]


def call_with_known(function: Callable[..., Any], spec: str, flag: str, **available: Any) -> Any:
    """Call ``function`` with those of ``available`` its signature names; report its errors."""
    parameters = inspect.signature(function).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {name: value for name, value in available.items() if takes_all or name in parameters}
    try:
        return function(**kwargs)
    except Exception as exc:
        raise HvdtrainError(f"{flag} {spec} raised {type(exc).__name__}: {exc}",
                            f"it is called with {', '.join(kwargs) or 'no arguments'}") from None
