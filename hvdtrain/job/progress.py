"""The rank side of the contract: the last finished step, left in the run directory for the
failure report (``rank-N.progress``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

from hvdtrain.atomic import write_atomic
from hvdtrain.job.paths import RUN_DIR_VARIABLE, RunPaths
from hvdtrain.job.ranks import rank_from_env


def read_progress(paths: RunPaths, rank: int) -> dict[str, int] | None:
    try:
        epoch, step = paths.progress(rank).read_text().split()
        return {"epoch": int(epoch), "step": int(step)}
    except (OSError, ValueError):
        return None


class ProgressFile:
    """A rank's last finished step. The loop only stores two numbers; a daemon thread writes them
    every ``period_s``, so even a rank stuck in a collective (or a sleep) ends up with its exact
    last step on disk. Without a supervisor (no ``HVDTRAIN_RUN_DIR``) it does nothing."""

    def __init__(self, env: Mapping[str, str], period_s: float = 0.5) -> None:
        run_dir = env.get(RUN_DIR_VARIABLE)
        self.path = RunPaths(Path(run_dir)).progress(rank_from_env(env)) if run_dir else None
        self.period_s = period_s
        self.current: tuple[int, int] | None = None
        self.written: tuple[int, int] | None = None
        self.writer: threading.Thread | None = None

    def update(self, epoch: int, step: int, force: bool = False) -> None:
        if self.path is None:
            return
        self.current = (epoch, step)
        if force:
            self._write()
        if self.writer is None:
            self.writer = threading.Thread(target=self._keep_writing, name="hvdtrain-progress", daemon=True)
            self.writer.start()

    def _keep_writing(self) -> None:
        while True:
            time.sleep(self.period_s)
            self._write()

    def _write(self) -> None:
        current = self.current
        if current is None or current == self.written or self.path is None:
            return
        write_atomic(self.path, f"{current[0]} {current[1]}\n")
        self.written = current
