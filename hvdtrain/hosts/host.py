"""Hosts and their slots: ``Host`` validates its own fields, ``parse_host_list`` reads
``-H a:2,b:4`` lists, ``check_np`` says whether a world size fits."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hvdtrain.errors import HvdtrainError

# RFC 1123 labels, plus '_' inside a label: Slurm node names may have it (slurm.conf's own
# example is rack[0-63]_blade[0-41]). Nothing here is special to a shell.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def is_ipv6(name: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address)
    except ValueError:
        return False


def is_valid_hostname(name: str) -> bool:
    """A hostname (RFC 1123 labels, '_' allowed inside) or an IPv4/IPv6 address; nothing a
    shell would interpret."""
    if _HOSTNAME.match(name):
        return True
    address, _, scope = name.partition("%")
    if "%" in name and not (scope.isascii() and scope.isalnum()):  # fe80::1%eth0, never fe80::1%;id
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def whole_number(text: str) -> int | None:
    """``text`` as a count when it is ASCII digits only (``str.isdigit`` also accepts '²', which
    ``int`` refuses), else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def split_name_slots(item: str) -> tuple[str, str | None]:
    """``host:N`` -> (host, "N"); ``[fe80::1]:N`` -> (fe80::1, "N"); a bare host or IPv6
    address -> (host, None). IPv6 addresses with a slot count go in brackets, as in URLs."""
    if item.startswith("["):
        address, close, rest = item[1:].partition("]")
        if close and (not rest or rest.startswith(":")):
            return address, rest[1:] if rest else None
        return item, None
    if item.count(":") != 1:
        return item, None
    name, _, slots = item.partition(":")
    return name, slots


def list_name(name: str) -> str:
    """A host as it goes before ``:N`` in a list: IPv6 addresses in brackets."""
    return f"[{name}]" if is_ipv6(name) else name


@dataclass(frozen=True)
class Host:
    """A machine and how many ranks it runs."""

    name: str
    slots: int = 1
    max_slots: int | None = None

    def __post_init__(self) -> None:
        if not is_valid_hostname(self.name):
            raise HvdtrainError(f"{self.name!r} is not a valid hostname or IP address",
                                "use letters, digits, '-', '_' and '.' only, e.g. node01 or 10.0.0.5")
        if self.slots <= 0:
            raise HvdtrainError(f"host {self.name} has {self.slots} slots",
                                "give each host at least 1 slot, e.g. node01:4")
        if self.max_slots is not None and self.max_slots < self.slots:
            raise HvdtrainError(f"host {self.name} has max_slots={self.max_slots} below slots={self.slots}",
                                "max_slots is the most ranks a host may take; make it >= slots")

    def __str__(self) -> str:
        return f"{self.name}:{self.slots}"


def parse_host_list(text: str) -> tuple[Host, ...]:
    """Parse ``-H a:2,b:4`` (a bare name means 1 slot; IPv6 as ``[fe80::1]:2``); duplicates are
    an error."""
    hosts: list[Host] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise HvdtrainError(f"empty entry in host list {text!r}", "write it as host:slots,host:slots")
        name, slots = split_name_slots(item)
        count = whole_number(slots) if slots is not None else 1
        if count is None:
            raise HvdtrainError(f"bad slot count {slots!r} for host {name!r} in {text!r}",
                                "slots are a positive whole number, e.g. node01:4")
        hosts.append(Host(name, count))
    reject_duplicates(hosts, repr(text))
    return tuple(hosts)


def reject_duplicates(hosts: Sequence[Host], source: str) -> None:
    seen: set[str] = set()
    for host in hosts:  # one pass: a 10,000-line hostfile is checked in milliseconds
        if host.name in seen:
            raise HvdtrainError(f"host {host.name} is listed twice in {source}",
                                "list each host once and add up its slots")
        seen.add(host.name)


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
