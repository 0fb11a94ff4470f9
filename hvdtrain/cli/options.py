"""Options shared by several commands, and the one way a click default is read from the
library's dataclasses (so each default is written once, where the library defines it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host, parse_host_list
from hvdtrain.hosts.hostfile import read_hostfile

F = TypeVar("F", bound=Callable[..., Any])


# For commands that take a command line after their options (`run ... -- CMD`, `slurm submit ... -- CMD`).
COMMAND_CONTEXT = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def defaults_of(cls: type[Any]) -> Callable[[str], Any]:
    """``defaults_of(TrainConfig)("epochs")``: the default of a field of dataclass ``cls``."""
    fields = {item.name: item for item in dataclasses.fields(cls)}

    def default(name: str) -> Any:
        item = fields[name]
        if item.default is not dataclasses.MISSING:
            return item.default
        if item.default_factory is not dataclasses.MISSING:
            return item.default_factory()
        raise TypeError(f"{cls.__name__}.{name} has no default")

    return default


def host_options(func: F) -> F:
    """-H and --hostfile, shared by every command that targets hosts."""
    func = click.option("--hostfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="A hostfile in any format `hvdtrain hostfile show` reads.")(func)
    return click.option("-H", "--hosts", default=None, metavar="HOST:SLOTS,...",
                        help="Hosts and their slots, e.g. node1:4,node2:4.")(func)


def ssh_options(func: F) -> F:
    """How to reach other hosts over ssh, shared by run and doctor."""
    func = click.option("--ssh-option", "ssh_option", multiple=True, metavar="KEY=VALUE",
                        help="Extra ssh -o option (repeatable).")(func)
    func = click.option("--ssh-identity", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="ssh private key for the hosts.")(func)
    return click.option("--ssh-port", type=int, default=None, help="ssh port of the hosts.")(func)


def resolve_hosts(hosts: str | None, hostfile: Path | None) -> tuple[Host, ...] | None:
    if hosts and hostfile:
        raise HvdtrainError("-H and --hostfile both name hosts", "give one of them")
    return parse_host_list(hosts) if hosts else read_hostfile(hostfile) if hostfile else None
