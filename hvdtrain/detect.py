"""Probes of the machine: the only place that asks the system what MPI it has.

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


def detect_node_hostnames() -> str:
    """``scontrol show node -o``: every node's NodeName and NodeHostName (empty without scontrol)."""
    path = shutil.which("scontrol")
    if path is None:
        return ""
    done = subprocess.run([path, "show", "node", "-o"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout
