"""Where a job's files live: one class for the run directory, and the hvdtrain every rank runs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RUN_DIR_VARIABLE = "HVDTRAIN_RUN_DIR"  # set by the supervisor: where its rank writes progress
RUNS_DIR_VARIABLE = "HVDTRAIN_RUNS_DIR"  # the user's: where run directories are made
DEFAULT_RUNS_DIR = "hvdtrain-runs"  # relative to the working directory, usually shared between nodes


@dataclass(frozen=True)
class RunPaths:
    """One job's run directory: per-rank logs, reports and progress, and the failure report."""

    root: Path

    def log(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.log"

    def report(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.json"

    def progress(self, rank: int) -> Path:
        return self.root / f"rank-{rank}.progress"

    @property
    def failure(self) -> Path:
        return self.root / "failure.json"

    def reports(self) -> list[Path]:
        return sorted(self.root.glob("rank-*.json"))

    @classmethod
    def new(cls, env: Mapping[str, str], cwd: Path, stamp: str, pid: int) -> RunPaths:
        """A fresh run directory under ``$HVDTRAIN_RUNS_DIR`` or ``./hvdtrain-runs`` (the working
        directory is usually shared between nodes; /tmp is not)."""
        base = Path(env[RUNS_DIR_VARIABLE]) if env.get(RUNS_DIR_VARIABLE) else cwd / DEFAULT_RUNS_DIR
        return cls(base / f"run-{stamp}-{pid}")


def hvdtrain_executable(python: str | None = None) -> str:
    """The ``hvdtrain`` script beside this interpreter: what ranks, remote doctors and batch
    scripts run, so they use the same install as the command that started them."""
    return str(Path(python or sys.executable).parent / "hvdtrain")
