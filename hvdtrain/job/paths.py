"""Where a job's files live: one class for the run directory, and the hvdtrain every rank runs."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.errors import HvdtrainError

RUN_DIR_VARIABLE = "HVDTRAIN_RUN_DIR"  # set by the supervisor: where its rank writes progress
RUNS_DIR_VARIABLE = "HVDTRAIN_RUNS_DIR"  # the user's: where run directories are made
DEFAULT_RUNS_DIR = "hvdtrain-runs"  # relative to the working directory, usually shared between nodes


@dataclass(frozen=True)
class RunPaths:
    """One job's run directory: per-rank logs, reports and progress, and the failure report.
    ``fresh``: hvdtrain named it, so it must not exist yet (a folder that does was made by someone else)."""

    root: Path
    fresh: bool = False

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
    def new(cls, env: Mapping[str, str], cwd: Path, stamp: str, pid: int, nonce: str) -> RunPaths:
        """A fresh run directory under ``$HVDTRAIN_RUNS_DIR`` or ``./hvdtrain-runs`` (the working
        directory is usually shared between nodes; /tmp is not). ``nonce`` is random: nobody can
        make the folder before this run does."""
        base = Path(env[RUNS_DIR_VARIABLE]) if env.get(RUNS_DIR_VARIABLE) else cwd / DEFAULT_RUNS_DIR
        return cls(base / f"run-{stamp}-{pid}-{nonce}", fresh=True)

    @property
    def discovery(self) -> Path:
        """An elastic job's host discovery wrapper (``launch/discovery.py``)."""
        return self.root / "discover-hosts"

    def restart(self, attempt: int) -> RunPaths:
        """The folder of the job's ``attempt``-th restart, beside this one."""
        return RunPaths(self.root.with_name(f"{self.root.name}-restart{attempt}"), fresh=True)


def claim_run_dir(path: Path, uid: int, fresh: bool) -> None:
    """Make ``path`` this user's run folder: created now with mode 0700, or (unless ``fresh``) one
    that already is a folder, not a link, owned by ``uid`` and writable by no one else. Another
    user's folder, or a shared one, is refused: its files could be links to yours, or be rewritten
    under you."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        if fresh:
            raise HvdtrainError(f"run folder {path} already exists, and hvdtrain did not make it",
                                "start the job again (it picks a new name)") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o022:
        raise HvdtrainError(f"run folder {path} is not yours alone (owner uid {info.st_uid}, mode "
                            f"{stat.filemode(info.st_mode)})", "give --output-dir a folder you own that only you "
                            "can write (chmod go-w), or a new one")


def hvdtrain_executable(python: str | None = None) -> str:
    """The ``hvdtrain`` script beside this interpreter: what ranks, remote doctors and batch
    scripts run, so they use the same install as the command that started them."""
    return str(Path(python or sys.executable).parent / "hvdtrain")
