"""The launch plan: everything needed to start N ranks, decided before anything runs."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts import Host, check_np

# Environment the ranks need; forwarded by name (with its current value) when set.
FORWARDED_ENV = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "HOROVOD_*")


@dataclass(frozen=True)
class LaunchPlan:
    """N ranks of one command on some hosts, and the environment they inherit."""

    np: int
    hosts: tuple[Host, ...]
    command: tuple[str, ...]
    env_names: tuple[str, ...] = ()
    as_root: bool = False

    def __post_init__(self) -> None:
        if not self.command:
            raise HvdtrainError("no command to launch", "put it after --, e.g. hvdtrain run -np 2 -- hvdtrain train")
        check_np(self.np, self.hosts)


def select_env_names(env: Mapping[str, str], patterns: tuple[str, ...] = FORWARDED_ENV) -> tuple[str, ...]:
    """The names in ``env`` that match the forwarding patterns, sorted for a stable argv."""
    return tuple(sorted(name for name in env if any(fnmatch.fnmatchcase(name, p) for p in patterns)))


def build_plan(np: int, hosts: tuple[Host, ...] | None, command: tuple[str, ...],
               env: Mapping[str, str], uid: int) -> LaunchPlan:
    """A plan from the user's flags; with no hosts, all ranks run on this machine."""
    chosen = hosts if hosts else (Host("localhost", max(np, 1)),)
    return LaunchPlan(np=np, hosts=chosen, command=command, env_names=select_env_names(env), as_root=uid == 0)
