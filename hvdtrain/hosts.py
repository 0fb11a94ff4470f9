"""Hosts and slots: where ranks run.

``Host`` validates its own fields; ``parse_host_list`` reads ``-H a:2,b:4`` lists;
``total_slots`` and ``check_np`` say whether a world size fits.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hvdtrain.errors import HvdtrainError

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def is_valid_hostname(name: str) -> bool:
    """A DNS hostname (RFC 1123 labels) or an IPv4/IPv6 address; nothing a shell would interpret."""
    if _HOSTNAME.match(name):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Host:
    """A machine and how many ranks it runs."""

    name: str
    slots: int = 1

    def __post_init__(self) -> None:
        if not is_valid_hostname(self.name):
            raise HvdtrainError(f"{self.name!r} is not a valid hostname or IP address",
                                "use letters, digits, '-' and '.' only, e.g. node01 or 10.0.0.5")
        if self.slots <= 0:
            raise HvdtrainError(f"host {self.name} has {self.slots} slots",
                                "give each host at least 1 slot, e.g. node01:4")

    def __str__(self) -> str:
        return f"{self.name}:{self.slots}"


def parse_host_list(text: str) -> tuple[Host, ...]:
    """Parse ``-H a:2,b:4`` (a bare name means 1 slot); duplicates are an error."""
    hosts: list[Host] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise HvdtrainError(f"empty entry in host list {text!r}", "write it as host:slots,host:slots")
        name, _, slots = item.rpartition(":") if ":" in item else (item, "", "1")
        if not slots.isdigit():
            raise HvdtrainError(f"bad slot count {slots!r} for host {name!r} in {text!r}",
                                "slots are a positive whole number, e.g. node01:4")
        hosts.append(Host(name, int(slots)))
    names = [host.name for host in hosts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise HvdtrainError(f"host {duplicates[0]} is listed twice in {text!r}",
                            "list each host once and add up its slots")
    return tuple(hosts)


def total_slots(hosts: Sequence[Host]) -> int:
    return sum(host.slots for host in hosts)


def check_np(np: int, hosts: Sequence[Host]) -> None:
    """A world size must be positive and fit the hosts' slots."""
    if np < 1:
        raise HvdtrainError(f"-np {np} is not a valid number of ranks", "use -np 1 or more")
    slots = total_slots(hosts)
    if np > slots:
        listed = ",".join(str(host) for host in hosts)
        raise HvdtrainError(f"-np {np} is more than the {slots} slots of {listed}",
                            f"lower -np to {slots} or add slots with -H host:slots")
