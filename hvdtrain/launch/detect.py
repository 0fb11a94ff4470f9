"""Probes of the machine: the only place that asks the system what MPI and srun it has.

Parsing is pure (``parse_mpi_version``); ``detect_mpi`` runs the one command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class MpiInfo:
    """The MPI implementation behind an ``mpirun``/``mpiexec`` binary."""

    flavor: str  # "openmpi", "mpich", "intel", or "unknown"
    version: str
    banner: str  # the first line the binary printed

    @property
    def label(self) -> str:
        return f"{self.flavor} {self.version}"


_PATTERNS = (
    ("openmpi", re.compile(r"\(Open MPI\)\s+(\S+)")),
    ("intel", re.compile(r"Intel\(R\) MPI Library.*?Version\s+([\w.]+)")),
    ("mpich", re.compile(r"HYDRA build details:.*?Version:\s+(\S+)", re.DOTALL)),
)


def parse_mpi_version(text: str) -> MpiInfo:
    """Identify the MPI from the output of ``mpirun --version``."""
    lines = text.strip().splitlines()
    banner = lines[0] if lines else ""
    for flavor, pattern in _PATTERNS:
        match = pattern.search(text)
        if match:
            return MpiInfo(flavor=flavor, version=match.group(1), banner=banner)
    return MpiInfo(flavor="unknown", version="", banner=banner)


def detect_mpi(mpirun: str = "mpirun") -> MpiInfo | None:
    """Run ``mpirun --version``; None when no such program is on PATH."""
    path = shutil.which(mpirun)
    if path is None:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return parse_mpi_version(done.stdout + done.stderr)


def parse_srun_mpi_list(text: str) -> tuple[str, ...]:
    """Plugin names from ``srun --mpi=list`` (one per line after a heading)."""
    plugins = []
    for line in text.splitlines():
        word = line.strip().removeprefix("srun: ").strip()
        if re.fullmatch(r"[a-z][a-z0-9_]*", word):
            plugins.append(word)
    return tuple(plugins)


def detect_srun_mpi_plugins() -> tuple[str, ...] | None:
    """The MPI plugins srun offers; None when srun is not on PATH."""
    path = shutil.which("srun")
    if path is None:
        return None
    done = subprocess.run([path, "--mpi=list"], capture_output=True, text=True, timeout=30, check=False)
    return parse_srun_mpi_list(done.stdout + done.stderr)


@dataclass(frozen=True)
class LauncherProbes:
    """What the machine offers the launcher choice: srun's MPI plugins and the MPI on PATH
    (None: not probed, or not there)."""

    srun_plugins: tuple[str, ...] | None = None
    mpi: MpiInfo | None = None


def probe_launchers(requested: str, in_slurm: bool) -> LauncherProbes:
    """Probe only what choosing ``requested`` needs: srun inside Slurm or when asked for, the
    MPI flavour when choosing automatically."""
    probe_srun = requested == "srun" or (requested == "auto" and in_slurm)
    return LauncherProbes(detect_srun_mpi_plugins() if probe_srun else None,
                          detect_mpi() if requested == "auto" else None)
