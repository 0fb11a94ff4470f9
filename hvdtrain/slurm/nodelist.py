"""Slurm allocations as hosts: hostlist expressions and SLURM_TASKS_PER_NODE, parsed purely.

The hostlist grammar (``node[01-04,07]``, several bracket groups, comma-separated parts) is
python-hostlist's, a package HPC sites maintain, rather than a hand-written one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import hostlist

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts import Host


def expand_nodelist(expr: str) -> list[str]:
    """``node[01-02],gpu1`` -> ``["node01", "node02", "gpu1"]``."""
    try:
        names: list[str] = hostlist.expand_hostlist(expr)
    except hostlist.BadHostlist as exc:
        raise HvdtrainError(f"bad Slurm nodelist {expr!r}: {exc}",
                            "write it as Slurm does, e.g. node[01-04,07]") from None
    if not names:
        raise HvdtrainError(f"Slurm nodelist {expr!r} names no node", "e.g. --nodelist node[01-02]")
    return names


def expand_tasks_per_node(spec: str) -> list[int]:
    """``2(x3),1`` -> ``[2, 2, 2, 1]`` (the format of SLURM_TASKS_PER_NODE)."""
    try:
        counts: list[int] = hostlist.parse_slurm_tasks_per_node(spec)
    except (hostlist.BadHostlist, ValueError) as exc:
        raise HvdtrainError(f"bad tasks-per-node spec {spec!r} ({exc})",
                            "write it as Slurm does, e.g. 2(x3),1") from None
    if not counts or min(counts) < 1:
        raise HvdtrainError(f"tasks-per-node spec {spec!r} gives a node no task", "e.g. 4(x2)")
    return counts


def hosts_from_nodelist(nodelist: str, tasks_per_node: str | None) -> tuple[Host, ...]:
    """Hosts with one slot per task; without a tasks spec, one slot per node."""
    names = expand_nodelist(nodelist)
    counts = expand_tasks_per_node(tasks_per_node) if tasks_per_node else [1] * len(names)
    if len(counts) == 1 and len(names) > 1:  # "4" alone means 4 on every node
        counts = counts * len(names)
    if len(counts) != len(names):
        raise HvdtrainError(f"{len(names)} nodes in {nodelist!r} but {len(counts)} task counts in "
                            f"{tasks_per_node!r}", "give one count per node, e.g. 2(x3),1 for 4 nodes")
    return tuple(Host(name, count) for name, count in zip(names, counts, strict=True))


def hosts_from_slurm(env: Mapping[str, str], nodelist: str | None = None,
                     tasks_per_node: str | None = None) -> tuple[Host, ...]:
    """The allocation's hosts: explicit values first, then ``SLURM_JOB_NODELIST`` and
    ``SLURM_TASKS_PER_NODE`` from ``env``."""
    nodes = nodelist or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodes:
        raise HvdtrainError("no Slurm allocation: SLURM_JOB_NODELIST is not set",
                            "run inside sbatch/salloc, or pass --nodelist 'node[01-02]'")
    return hosts_from_nodelist(nodes, tasks_per_node or env.get("SLURM_TASKS_PER_NODE"))


def parse_node_hostnames(scontrol_nodes: str) -> dict[str, str]:
    """NodeName -> NodeHostname from ``scontrol show node -o`` (they differ when nodes have aliases)."""
    mapping = {}
    for line in scontrol_nodes.splitlines():
        name = re.search(r"\bNodeName=(\S+)", line)
        host = re.search(r"\bNodeHostName=(\S+)", line)
        if name and host:
            mapping[name.group(1)] = host.group(1)
    return mapping


def to_hostnames(hosts: tuple[Host, ...], hostnames: Mapping[str, str]) -> tuple[Host, ...]:
    """Hosts renamed to the machines' hostnames; nodes on one machine merge, adding their slots."""
    merged: dict[str, int] = {}
    for host in hosts:
        name = hostnames.get(host.name, host.name)
        merged[name] = merged.get(name, 0) + host.slots
    return tuple(Host(name, slots) for name, slots in merged.items())
