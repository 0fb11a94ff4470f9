"""``hvdtrain doctor``: can this install run Horovod jobs? Facts are probed once, judged purely."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdtrain.install.build import read_installed_record
from hvdtrain.install.plan import TOOL_HINTS
from hvdtrain.job.cores import Cpu, format_cpu_list, numa_share, read_cpus
from hvdtrain.launch.detect import detect_mpi
from hvdtrain.train.config import VisibleGpus, choose_device, detect_gpus, gpu_numa_node

FIX = "run `hvdtrain build-horovod`"
NETWORK_INTERFACES = Path("/sys/class/net")


@dataclass(frozen=True)
class Facts:
    """What doctor found; every field is plain data so it prints as JSON."""

    python: str
    torch: str
    torch_cuda: str | None  # the CUDA torch was built with (torch.version.cuda), None for a CPU build
    horovod: str | None
    horovod_error: str | None  # why ``import horovod.torch`` failed, if it did
    mpi_built: bool
    gloo_built: bool
    nccl_built: bool
    torch_ops: bool
    built_against_torch: str | None
    built_against_mpi: str | None
    built_against_torch_cuda: str | None
    built_against_cuda: str | None  # the toolkit Horovod's kernels were compiled with
    nccl_version: str | None  # the NCCL Horovod was built against
    gpu_operations: str | None
    compiler: str | None
    linked_mpi_library: str | None  # the libmpi loaded with Horovod's torch extension
    mpirun: str | None
    mpirun_banner: str | None
    cpu_count: int
    libcuda: bool  # the GPU driver's libcuda.so.1 loads on this node
    cuda_available: bool
    cuda_device_count: int
    local_ranks: list[str]  # with one rank per visible GPU: each local rank's GPU, its NUMA node, its cores
    network_interfaces: list[str]


def diagnose(facts: Facts, interface: str | None = None) -> list[str]:
    """One line per problem, each naming its fix; empty when Horovod can run (and ``interface``, the
    job's --network-interface, exists here)."""
    problems = []
    if interface is not None and interface not in facts.network_interfaces:
        problems.append(f"network interface {interface} does not exist on this host (it has "
                        f"{', '.join(facts.network_interfaces) or 'none'}): give --network-interface a name "
                        "every host has")
    if facts.horovod is None:
        return [*problems, f"Horovod is not installed in this Python ({sys.prefix}): {FIX}"]
    if not facts.torch_ops:
        problems.append(f"Horovod's PyTorch extension does not load ({facts.horovod_error}): {FIX} to rebuild it")
    elif not (facts.mpi_built or facts.gloo_built):
        problems.append(f"Horovod was built with neither MPI nor Gloo: {FIX}")
    if facts.built_against_torch and facts.built_against_torch != facts.torch:
        problems.append(f"Horovod was built against torch {facts.built_against_torch} but {facts.torch} "
                        f"is installed: {FIX}")
    if facts.built_against_torch and facts.built_against_torch_cuda != facts.torch_cuda:
        problems.append(f"Horovod was built against a torch with CUDA {facts.built_against_torch_cuda or 'none'} "
                        f"but this torch has CUDA {facts.torch_cuda or 'none'}: {FIX}")
    if facts.mpirun is None:
        problems.append(f"mpirun was not found on PATH: {TOOL_HINTS['mpirun']}")
    elif facts.built_against_mpi and facts.built_against_mpi != facts.mpirun:
        problems.append(f"Horovod was built against {facts.built_against_mpi} but mpirun on PATH is "
                        f"{facts.mpirun}: put the matching mpirun first on PATH, or {FIX}")
    if facts.cuda_available and not facts.nccl_built:
        problems.append(f"torch sees {facts.cuda_device_count} GPU(s) but Horovod was built without NCCL: "
                        f"{FIX} with this CUDA build of torch (without --cpu-only) to build it with NCCL")
    return problems


def advise(facts: Facts) -> list[str]:
    """Warnings: Horovod runs here, but not everything it was built for does (exit status stays 0)."""
    if facts.nccl_built and not facts.libcuda:
        return [f"Horovod was built with NCCL {facts.nccl_version or ''} but no GPU driver loads on this node "
                "(libcuda.so.1): CPU tensors work, GPU all-reduce needs a GPU node. Expected on a login node; "
                "for nodes without GPUs, build with `hvdtrain build-horovod --cpu-only` in their own environment"]
    return []


def detect_libcuda() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def parse_maps_libmpi(maps: str) -> str | None:
    """The path of the ``libmpi.so`` mapped into a process, from its ``/proc/PID/maps``."""
    for line in maps.splitlines():
        match = re.search(r"\s(/\S*/libmpi\.so[.\d]*)$", line)
        if match:
            return match.group(1)
    return None


def _horovod_facts() -> dict[str, Any]:
    found: dict[str, Any] = {"horovod": None, "horovod_error": None, "mpi_built": False, "gloo_built": False,
                             "nccl_built": False, "torch_ops": False, "linked_mpi_library": None}
    try:
        import horovod
    except ImportError:
        return found
    found["horovod"] = horovod.__version__
    try:
        import horovod.torch as hvd
    except Exception as exc:  # an ABI mismatch shows up as ImportError or OSError
        found["horovod_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return found
    found.update(torch_ops=True, mpi_built=bool(hvd.mpi_built()), gloo_built=bool(hvd.gloo_built()),
                 nccl_built=bool(hvd.nccl_built()))
    # The extension is loaded now: the libmpi in our own address space is the one it uses.
    found["linked_mpi_library"] = parse_maps_libmpi(Path("/proc/self/maps").read_text())
    return found


def gpu_placement(gpus: VisibleGpus, nodes: Sequence[int | None], cpus: Sequence[Cpu]) -> list[str]:
    """With one rank per visible GPU (``nodes``: each GPU's NUMA node), what each local rank
    takes under ``hvdtrain run``: its device, and the cores it binds itself to."""
    return [f"local rank {rank}: {choose_device('auto', gpus, rank, gpus.count)}, NUMA node "
            f"{'unknown' if nodes[rank] is None else nodes[rank]}, "
            f"cores {format_cpu_list(numa_share(cpus, nodes, rank))}" for rank in range(gpus.count)]


def collect_facts() -> Facts:
    """Probe this Python, torch, Horovod, its build record, the GPUs and the mpirun on PATH."""
    import torch

    record: dict[str, Any] = read_installed_record(sys.prefix)
    mpi = detect_mpi()
    cuda = torch.cuda.is_available()
    gpus = detect_gpus(os.environ)
    return Facts(
        python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
        **_horovod_facts(), built_against_torch=record.get("torch"), built_against_mpi=record.get("mpi"),
        built_against_torch_cuda=record.get("torch_cuda"), built_against_cuda=record.get("cuda"),
        nccl_version=record.get("nccl"), gpu_operations=record.get("gpu_operations") if record else None,
        compiler=record.get("compiler"), libcuda=detect_libcuda(),
        mpirun=mpi.label if mpi else None, mpirun_banner=mpi.banner if mpi else None,
        cpu_count=len(os.sched_getaffinity(0)), cuda_available=cuda,
        cuda_device_count=gpus.count,
        local_ranks=gpu_placement(gpus, [gpu_numa_node(f"cuda:{index}") for index in range(gpus.count)],
                                  read_cpus(os.sched_getaffinity(0))),
        network_interfaces=sorted(path.name for path in NETWORK_INTERFACES.iterdir()),
    )


def render_json(facts: Facts, problems: list[str], warnings: list[str]) -> str:
    return json.dumps({**asdict(facts), "problems": problems, "warnings": warnings, "ok": not problems}, indent=2)


def render_text(facts: Facts, problems: list[str], warnings: list[str]) -> str:
    rows = [(name, _cell(value, "\n" if name == "local_ranks" else ", ")) for name, value in asdict(facts).items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}".replace("\n", "\n" + " " * (width + 2)) for name, value in rows]
    lines += [f"warning: {warning}" for warning in warnings]
    lines += [f"problem: {problem}" for problem in problems] or ["ok: Horovod can run here"]
    return "\n".join(lines)


def _cell(value: Any, separator: str) -> str:
    if isinstance(value, list):
        return separator.join(map(str, value)) or "-"
    return "-" if value in (None, "") else str(value)
