"""Hosts and slots: where ranks run.

``Host`` validates its own fields; ``parse_host_list`` reads ``-H a:2,b:4`` lists;
``check_np`` says whether a world size fits; ``assign_ranks`` lays ranks out on hosts.
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
    max_slots: int | None = None

    def __post_init__(self) -> None:
        if not is_valid_hostname(self.name):
            raise HvdtrainError(f"{self.name!r} is not a valid hostname or IP address",
                                "use letters, digits, '-' and '.' only, e.g. node01 or 10.0.0.5")
        if self.slots <= 0:
            raise HvdtrainError(f"host {self.name} has {self.slots} slots",
                                "give each host at least 1 slot, e.g. node01:4")
        if self.max_slots is not None and self.max_slots < self.slots:
            raise HvdtrainError(f"host {self.name} has max_slots={self.max_slots} below slots={self.slots}",
                                "max_slots is the most ranks a host may take; make it >= slots")

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
    reject_duplicates(hosts, repr(text))
    return tuple(hosts)


def reject_duplicates(hosts: Sequence[Host], source: str) -> None:
    names = [host.name for host in hosts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise HvdtrainError(f"host {duplicates[0]} is listed twice in {source}",
                            "list each host once and add up its slots")


def total_slots(hosts: Sequence[Host]) -> int:
    return sum(host.slots for host in hosts)


def check_np(np: int, hosts: Sequence[Host], oversubscribe: bool = False) -> None:
    """A world size must be positive and fit the hosts' slots (unless oversubscribing)."""
    if np < 1:
        raise HvdtrainError(f"-np {np} is not a valid number of ranks", "use -np 1 or more")
    slots = total_slots(hosts)
    if np > slots and not oversubscribe:
        listed = ",".join(str(host) for host in hosts)
        raise HvdtrainError(f"-np {np} is more than the {slots} slots of {listed}",
                            f"lower -np to {slots}, add slots, or pass --oversubscribe")


@dataclass(frozen=True)
class Slot:
    """Where one rank runs, in Horovod's terms."""

    rank: int
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int
    host: str


def assign_ranks(hosts: Sequence[Host], np: int, by: str = "slot") -> list[Slot]:
    """Lay ``np`` ranks on hosts: ``slot`` fills each host before the next (mpirun --map-by slot),
    ``node`` deals ranks round-robin over hosts with free slots. Oversubscribed ranks wrap around."""
    if by not in ("slot", "node"):
        raise HvdtrainError(f"unknown mapping {by!r}", "use by slot or by node")
    check_np(np, hosts, oversubscribe=True)
    order: list[str] = []
    if by == "slot":
        order = [host.name for host in hosts for _ in range(host.slots)]
    else:
        for turn in range(max(host.slots for host in hosts)):
            order += [host.name for host in hosts if turn < host.slots]
    placed = [order[index % len(order)] for index in range(np)]
    local_ranks = [placed[:rank].count(name) for rank, name in enumerate(placed)]
    slots = []
    for rank, name in enumerate(placed):
        peers = [other for other, local in zip(placed, local_ranks, strict=True) if local == local_ranks[rank]]
        slots.append(Slot(rank=rank, local_rank=local_ranks[rank], local_size=placed.count(name),
                          cross_rank=peers.index(name), cross_size=len(peers), host=name))
    return slots
