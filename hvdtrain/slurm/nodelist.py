"""Slurm allocations as hosts: hostlist expressions and SLURM_TASKS_PER_NODE, parsed purely.

The ranges inside brackets (``01-04,07``) are read by python-hostlist, a package HPC sites
maintain; the parts, the repeats and the order of several bracket groups follow
``scontrol show hostnames``, which python-hostlist does not (it drops repeats and sorts groups).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import hostlist

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host, reject_duplicates

_GROUP = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class SlurmJob:
    """The Slurm job this process runs in, as its environment describes it."""

    job_id: str
    nodelist: str
    tasks_per_node: str | None


def slurm_job(env: Mapping[str, str]) -> SlurmJob | None:
    """The one answer to "are we inside a Slurm allocation?": its node list is set
    (``SLURM_JOB_NODELIST``, or ``SLURM_NODELIST``, its older name). None outside Slurm."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        return None
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "?"
    return SlurmJob(job_id, nodelist, env.get("SLURM_TASKS_PER_NODE"))


def expand_nodelist(expr: str) -> list[str]:
    """``node[01-02],gpu1`` -> ``["node01", "node02", "gpu1"]``, name for name as
    ``scontrol show hostnames`` prints them: spaces around commas ignored, repeated names kept,
    and with several bracket groups the last varies fastest, then the first, the second, ..."""
    try:
        names = [name for part in _split_parts(expr) for name in _expand_part(part)]
    except hostlist.BadHostlist as exc:
        raise HvdtrainError(f"bad Slurm nodelist {expr!r}: {exc}",
                            "write it as Slurm does, e.g. node[01-04,07]") from None
    if not names:
        raise HvdtrainError(f"Slurm nodelist {expr!r} names no node", "e.g. --nodelist node[01-02]")
    return names


def _split_parts(expr: str) -> list[str]:
    """The comma-separated parts of a hostlist, split outside brackets, stripped, empty ones dropped."""
    parts, depth, current = [], 0, ""
    for char in expr:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise hostlist.BadHostlist("unbalanced brackets")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise hostlist.BadHostlist("unbalanced brackets")
    return [part.strip() for part in [*parts, current] if part.strip()]


def _expand_part(part: str) -> list[str]:
    """One part (``r[1-2]n[08-09]``): each bracket group's ranges expanded by python-hostlist,
    item by item so repeats stay, then combined in Slurm's order."""
    pieces = _GROUP.split(part)  # literal, group, literal, group, ..., literal
    groups = [[name[1:] for item in group.split(",") for name in hostlist.expand_hostlist(f"x[{item}]")]
              for group in pieces[1::2]]
    if not groups:
        return [part]
    # Slowest to fastest: the second-to-last group back to the first, then the last.
    order = [*range(len(groups) - 2, -1, -1), len(groups) - 1]
    names = []
    for values in itertools.product(*(groups[index] for index in order)):
        chosen = dict(zip(order, values, strict=True))
        names.append("".join(piece if at % 2 == 0 else chosen[at // 2] for at, piece in enumerate(pieces)))
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
    hosts = tuple(Host(name, count) for name, count in zip(names, counts, strict=True))
    reject_duplicates(hosts, f"nodelist {nodelist!r}")
    return hosts


def hosts_from_slurm(env: Mapping[str, str], nodelist: str | None = None,
                     tasks_per_node: str | None = None) -> tuple[Host, ...]:
    """The allocation's hosts: explicit values first, then the job's from ``env``."""
    job = slurm_job(env)
    nodes = nodelist or (job.nodelist if job else None)
    if not nodes:
        raise HvdtrainError("no Slurm allocation: SLURM_JOB_NODELIST is not set",
                            "run inside sbatch/salloc, or pass --nodelist 'node[01-02]'")
    return hosts_from_nodelist(nodes, tasks_per_node or (job.tasks_per_node if job else None))


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
