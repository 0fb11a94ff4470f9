"""From what was probed to what will be built: a pure ``plan_build(probes, ...) -> BuildPlan``.

Every choice the build makes (C++ standard, CPU or NCCL, archs, jobs) and every reason to refuse
is decided here, from values, so it is tested from tables and printed by ``--dry-run``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.install.toolchain import (
    CUDA_FIX,
    Nccl,
    cxx_standard_for_torch,
    parallel_jobs,
    parse_compiler_id,
    parse_version_tuple,
)

HOROVOD_VERSION = "0.28.1"
# PyPI's horovod-0.28.1.tar.gz (Spack's py-horovod recipe pins the same): checked after every
# download and before every use, whichever index pip downloaded it from.
HOROVOD_SDIST_SHA256 = "92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0"
# Horovod's frameworks and collectives: PyTorch only, with both MPI and Gloo controllers.
FRAMEWORK_ENV = {
    "HOROVOD_WITH_PYTORCH": "1",
    "HOROVOD_WITH_MPI": "1",
    "HOROVOD_WITH_GLOO": "1",
    "HOROVOD_WITHOUT_TENSORFLOW": "1",
    "HOROVOD_WITHOUT_MXNET": "1",
}
# Inherited variables that would steer a CPU build towards GPUs.
GPU_ENV = ("HOROVOD_GPU_OPERATIONS", "HOROVOD_GPU_ALLREDUCE", "HOROVOD_GPU_ALLGATHER", "HOROVOD_GPU_BROADCAST",
           "HOROVOD_GPU_ALLTOALL", "HOROVOD_GPU_REDUCESCATTER", "HOROVOD_GPU")


@dataclass(frozen=True)
class Probes:
    """What the edge found out about this machine and Python; plain values, no probing here."""

    torch: str | None  # torch.__version__, None when torch does not import
    torch_cuda: str | None  # torch.version.cuda: the CUDA torch was built with, None for CPU builds
    torch_archs: tuple[int, ...]  # compute capabilities torch was compiled for
    python_abi: str  # "cp311"
    mpi: str | None  # "openmpi 4.1.4", from mpirun --version
    tools: Mapping[str, str | None]  # program -> path on PATH (mpicc, cmake, c++, patch), None if missing
    python_headers: bool  # Python.h exists for this interpreter
    compiler_version: str  # first line of `c++ --version`
    cuda_home: Path | None
    cuda_version: str | None  # of the toolkit at cuda_home
    nccl: Nccl | None
    cpus: int
    memory_bytes: int
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildTarget:
    """Everything a Horovod binary depends on; two equal targets share one cached wheel."""

    horovod: str
    torch: str
    torch_cuda: str | None  # a CPU-only Horovod for a CUDA torch is another binary than for a CPU torch
    mpi: str
    python_abi: str
    compiler: str
    cxx_standard: int
    gpu_operations: str  # "NCCL" or "" (CPU only)
    cuda: str | None  # toolkit version the kernels were compiled with
    nccl: str | None
    cuda_archs: tuple[int, ...]
    patches_digest: str  # sha256 of our patch files, so a changed patch is a new build

    @property
    def cache_key(self) -> str:
        gpu = f"cuda-{self.cuda}_nccl-{self.nccl}" if self.gpu_operations else "cpu"
        archs = ",".join(map(str, self.cuda_archs))
        rest = f"cxx{self.cxx_standard}:{self.torch_cuda}:{archs}:{self.patches_digest}"
        digest = hashlib.sha256(rest.encode()).hexdigest()[:10]
        mpi = self.mpi.replace(" ", "-")
        return f"horovod-{self.horovod}_torch-{self.torch}_{mpi}_{self.python_abi}_{self.compiler}_{gpu}_{digest}"


@dataclass(frozen=True)
class BuildPlan:
    target: BuildTarget
    env: Mapping[str, str]  # variables the build sets on top of the caller's environment
    unset: tuple[str, ...]
    nccl: Nccl | None


TOOL_HINTS = {
    "mpicc": "`module load openmpi` (or mpich), or install Open MPI's development files (libopenmpi-dev)",
    "mpirun": "`module load openmpi` (or mpich), or install Open MPI (openmpi-bin)",
    "cmake": "`module load cmake`, or `pip install cmake` into this environment",
    "c++": "`module load gcc`, or install a C++ compiler (g++)",
    "patch": "install GNU patch (`patch` package), or `module load patch`",
}


def check_tools(probes: Probes) -> None:
    """Refuse early, naming what to load or install, when a build tool is missing."""
    missing = [tool for tool in TOOL_HINTS if not probes.tools.get(tool)]
    if missing:
        hints = "; ".join(f"{tool}: {TOOL_HINTS[tool]}" for tool in missing)
        raise HvdtrainError(f"building Horovod needs {', '.join(missing)} on PATH", hints)
    if not probes.python_headers:
        raise HvdtrainError("Python.h is missing for this Python: Horovod compiles against it",
                            "`module load python` with its headers, or install python3-dev")


def choose_gpu_operations(probes: Probes, cpu_only: bool) -> str:
    """NCCL for a CUDA build of torch (whether or not this node has a GPU), nothing for a CPU torch."""
    if cpu_only or probes.torch_cuda is None:
        return ""
    if probes.cuda_home is None:
        raise HvdtrainError(f"torch {probes.torch} was built with CUDA {probes.torch_cuda} but no CUDA toolkit "
                            "was found (HOROVOD_CUDA_HOME, CUDA_HOME, CUDA_PATH, nvcc on PATH, /usr/local/cuda)",
                            CUDA_FIX)
    toolkit_major = parse_version_tuple(probes.cuda_version or "0")[:1]
    if toolkit_major != parse_version_tuple(probes.torch_cuda)[:1]:
        raise HvdtrainError(f"torch {probes.torch} was built with CUDA {probes.torch_cuda} but the toolkit at "
                            f"{probes.cuda_home} is CUDA {probes.cuda_version}",
                            f"`module load cuda/{probes.torch_cuda}`, or set CUDA_HOME to a CUDA "
                            f"{probes.torch_cuda.split('.')[0]}.x toolkit, or use --cpu-only")
    if probes.nccl is None:
        raise HvdtrainError(f"torch {probes.torch} was built with CUDA but NCCL was not found "
                            "(HOROVOD_NCCL_HOME, or the nvidia-nccl wheel beside torch)",
                            "`module load nccl` and set HOROVOD_NCCL_HOME, pip install the nvidia-nccl wheel "
                            "matching torch, or use --cpu-only")
    return "NCCL"


def plan_build(probes: Probes, cpu_only: bool, patches_digest: str, nccl_link_dir: Path) -> BuildPlan:
    """The build for this environment; a ``libnccl.so`` link would go in ``nccl_link_dir/<cache key>``."""
    if probes.torch is None:
        raise HvdtrainError("torch does not import in this Python",
                            "pip install your torch first (e.g. pip install torch==2.14.1), then build Horovod")
    if probes.mpi is None:
        raise HvdtrainError("mpirun was not found on PATH", TOOL_HINTS["mpirun"])
    check_tools(probes)
    standard = cxx_standard_for_torch(probes.torch)
    gpu = choose_gpu_operations(probes, cpu_only)
    jobs = probes.env.get("MAKEFLAGS") or f"-j{parallel_jobs(probes.cpus, probes.memory_bytes)}"
    env = {**FRAMEWORK_ENV, "HVDTRAIN_CXX_STANDARD": str(standard), "MAKEFLAGS": jobs}
    nccl = probes.nccl if gpu else None
    archs: tuple[int, ...] = ()
    if gpu and nccl is not None and probes.cuda_home is not None:
        archs = tuple(int(cc) for cc in probes.env["HOROVOD_BUILD_CUDA_CC_LIST"].split(",")) \
            if probes.env.get("HOROVOD_BUILD_CUDA_CC_LIST") else probes.torch_archs
        if not archs:
            raise HvdtrainError(f"torch {probes.torch} names no GPU architectures to build for",
                                "set HOROVOD_BUILD_CUDA_CC_LIST, e.g. 80,90")
    target = BuildTarget(
        horovod=HOROVOD_VERSION, torch=probes.torch, torch_cuda=probes.torch_cuda, mpi=probes.mpi,
        python_abi=probes.python_abi, compiler=parse_compiler_id(probes.compiler_version), cxx_standard=standard,
        gpu_operations=gpu, cuda=probes.cuda_version if gpu else None, nccl=nccl.version if nccl else None,
        cuda_archs=archs, patches_digest=patches_digest)
    if archs and nccl is not None and probes.cuda_home is not None:
        # Links of one target's own: two builds for different targets never re-point each other's.
        home = nccl_link_dir / target.cache_key if nccl.needs_link else nccl.include.parent
        env.update(HOROVOD_GPU_OPERATIONS="NCCL", HOROVOD_CUDA_HOME=str(probes.cuda_home),
                   CUDA_HOME=str(probes.cuda_home), HOROVOD_NCCL_HOME=str(home),
                   HOROVOD_NCCL_INCLUDE=str(nccl.include), HOROVOD_NCCL_LIB=str(home / "lib"),
                   HOROVOD_BUILD_CUDA_CC_LIST=",".join(map(str, archs)))
        if nccl.library.suffix != ".a":
            env["HOROVOD_NCCL_LINK"] = "SHARED"
    unset = () if gpu else tuple(name for name in GPU_ENV if name in probes.env)
    return BuildPlan(target, env, unset, nccl)


def render_plan(plan: BuildPlan, action: str) -> str:
    """What ``build-horovod --dry-run`` prints: the target, the action and the build's variables."""
    target = plan.target
    lines = [f"Horovod {target.horovod} for torch {target.torch} ({target.python_abi}), {target.mpi}, "
             f"{target.compiler}, C++{target.cxx_standard}, "
             + (f"NCCL {target.nccl} with CUDA {target.cuda} for sm {','.join(map(str, target.cuda_archs))}"
                f" (NCCL from {plan.nccl.source})" if target.gpu_operations and plan.nccl
                else "CPU only (MPI and Gloo)"),
             f"cache key: {target.cache_key}", f"action: {action}"]
    lines += [f"  {name}={value}" for name, value in sorted(plan.env.items())]
    lines += [f"  unset {name}" for name in plan.unset]
    return "\n".join(lines)
