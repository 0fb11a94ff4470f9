"""Where each rank runs: ranks laid out on hosts, in Horovod's terms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host, check_np


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
