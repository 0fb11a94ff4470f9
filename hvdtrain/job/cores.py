"""Which cores a rank runs on. hvdtrain's launchers bind nothing (`--bind-to none`,
`--cpu-bind=none`); with HVDTRAIN_BIND_CORES=1, which `hvdtrain run` sets, each rank binds itself,
Horovod's background thread included, to an even share of its node's cores. A rank on a GPU takes
its share of the cores on its GPU's NUMA node, whole physical cores first (`numa_share`): on a
two-socket node, a rank fed across the socket link, or two ranks on the two threads of one core,
lose 1-10% (torch's `--numa-binding` notes).

Why: Horovod's threads that sleep instead of spinning wake on whichever core the scheduler picks,
and unbound it sometimes put both ranks' background threads on one core while the other idled. On
the 2-core VM a 16 MiB all-reduce then took 8.9 ms against 7.1 with upstream's spinning; bound,
6.6 against 6.6 (docs/performance.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BIND_VARIABLE = "HVDTRAIN_BIND_CORES"
SYSFS = Path("/sys")
PCI_BUS_ID = re.compile(r"(?:(?P<domain>[0-9A-Fa-f]{1,8}):)?(?P<rest>[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])")


@dataclass(frozen=True)
class Cpu:
    """One logical CPU: its NUMA node (None when the kernel does not say) and the logical CPUs of
    its physical core (``thread_siblings_list``; itself alone without SMT)."""

    id: int
    node: int | None
    siblings: tuple[int, ...]


def binds_cores(env: Mapping[str, str]) -> bool:
    return env.get(BIND_VARIABLE) == "1"


def core_share(cores: Collection[int], local_rank: int, local_size: int) -> tuple[int, ...]:
    """Local rank r of n gets the r-th of n equal slices of the cores, lowest numbers first; the
    cores that do not divide evenly stay unused. Empty (do not bind) when a rank would get none."""
    if local_size < 1 or not 0 <= local_rank < local_size or len(cores) < local_size:
        return ()
    each = len(cores) // local_size
    return tuple(sorted(cores)[local_rank * each:(local_rank + 1) * each])


def numa_share(cpus: Sequence[Cpu], gpu_nodes: Sequence[int | None], local_rank: int) -> tuple[int, ...]:
    """Local rank r's cores when local rank i's GPU hangs off NUMA node ``gpu_nodes[i]``: the ranks
    whose GPUs share a node split that node's usable cores, whole physical cores (with their SMT
    threads) first, then single threads when the node has fewer cores than ranks. Without NUMA
    information, or with fewer threads on the node than ranks, the even split (``core_share``)."""
    ids = [cpu.id for cpu in cpus]
    mine = gpu_nodes[local_rank] if 0 <= local_rank < len(gpu_nodes) else None
    on_node = sorted(cpu.id for cpu in cpus if mine is not None and cpu.node == mine)
    peers = [rank for rank, node in enumerate(gpu_nodes) if node == mine]
    if mine is None or None in gpu_nodes or len(on_node) < len(peers):
        return core_share(ids, local_rank, len(gpu_nodes))
    index = peers.index(local_rank)
    cores: dict[tuple[int, ...], list[int]] = {}
    for cpu in sorted(cpus, key=lambda cpu: cpu.id):
        if cpu.id in on_node:
            cores.setdefault(cpu.siblings, []).append(cpu.id)
    whole = list(cores.values())
    if len(whole) < len(peers):
        return core_share(on_node, index, len(peers))
    each = len(whole) // len(peers)
    return tuple(sorted(cpu for core in whole[index * each:(index + 1) * each] for cpu in core))


def read_cpus(ids: Collection[int], sysfs: Path = SYSFS) -> tuple[Cpu, ...]:
    """The CPUs ``ids`` as the kernel describes them under ``sysfs``; what it does not say is None
    (node) or the CPU alone (siblings)."""
    nodes: dict[int, int] = {}
    for folder in sorted((sysfs / "devices/system/node").glob("node[0-9]*")):
        for cpu in parse_cpu_list(_read(folder / "cpulist") or ""):
            nodes[cpu] = int(folder.name[4:])
    return tuple(Cpu(cpu, nodes.get(cpu), tuple(parse_cpu_list(
        _read(sysfs / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") or str(cpu))))
        for cpu in sorted(ids))


def pci_numa_node(bus_id: str, sysfs: Path = SYSFS) -> int | None:
    """The NUMA node of a PCI device (a GPU) from its bus id as torch (``0000:17:00.0``) or
    nvidia-smi (``00000000:17:00.0``) writes it; None when unknown (-1, no such file, not a bus id)."""
    match = PCI_BUS_ID.fullmatch(bus_id.strip())
    if not match:
        return None
    name = f"{int(match['domain'] or '0', 16):04x}:{match['rest'].lower()}"
    text = _read(sysfs / "bus/pci/devices" / name / "numa_node")
    return int(text) if text and text.isdigit() else None


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's CPU list format: ``0-3,8,10-11``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        if low.strip().isdigit() and (not high or high.strip().isdigit()):
            cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def format_cpu_list(cpus: Collection[int]) -> str:
    """The kernel's CPU list format back: ``0-3,8,10-11``; ``-`` for none."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{low}-{high}" if high > low else str(low) for low, high in runs) or "-"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def bind_process(share: Collection[int], tasks: Path = Path("/proc/self/task")) -> None:
    """Bind every thread of this process to ``share``; threads started later inherit it."""
    for task in tasks.iterdir():
        try:
            os.sched_setaffinity(int(task.name), share)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def bind_rank(env: Mapping[str, str], local_rank: int, local_size: int,
              gpu_nodes: Sequence[int | None] = ()) -> tuple[int, ...]:
    """This rank's cores when it was asked to bind itself and could (then bound), else (). With
    ``gpu_nodes`` (the NUMA node of each local rank's GPU), the cores near this rank's GPU."""
    if not binds_cores(env):
        return ()
    usable = os.sched_getaffinity(0)
    share = (numa_share(read_cpus(usable), gpu_nodes, local_rank) if gpu_nodes
             else core_share(usable, local_rank, local_size))
    if share:
        bind_process(share)
    return share
