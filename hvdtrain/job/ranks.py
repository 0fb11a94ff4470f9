"""Which rank am I, of how many: the variables each launcher sets in every rank, in one table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LauncherVariables:
    """The names one launcher gives a rank's number, the world size and the rank on its node."""

    launcher: str
    rank: str
    size: str
    local_rank: str
    joins_job: bool  # True when the ranks it starts can form one Horovod job (an MPI or Horovod launcher)


# First match wins: Open MPI's mpirun also sets PMIX_RANK, and a batch script sets SLURM_PROCID.
LAUNCHER_VARIABLES = (
    LauncherVariables("mpirun (Open MPI)", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                      "OMPI_COMM_WORLD_LOCAL_RANK", True),
    LauncherVariables("srun --mpi=pmix", "PMIX_RANK", "SLURM_NTASKS", "SLURM_LOCALID", True),
    LauncherVariables("horovodrun", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", True),
    LauncherVariables("mpiexec (MPICH)", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", True),
    LauncherVariables("srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", False),
)


def _launcher(env: Mapping[str, str]) -> LauncherVariables | None:
    return next((row for row in LAUNCHER_VARIABLES if _number(env, row.rank) is not None), None)


def _number(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


def rank_from_env(env: Mapping[str, str]) -> int:
    """This process's rank (0 when no launcher started it)."""
    row = _launcher(env)
    rank = _number(env, row.rank) if row else None
    return rank or 0


def size_from_env(env: Mapping[str, str]) -> int:
    """The number of ranks (1 when no launcher started it)."""
    row = _launcher(env)
    size = _number(env, row.size) if row else None
    return size if size else 1


def launched_by_launcher(env: Mapping[str, str]) -> bool:
    """An MPI or Horovod launcher started this process, so it can join a Horovod job."""
    row = _launcher(env)
    return row is not None and row.joins_job
