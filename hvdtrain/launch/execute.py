"""The one place that starts a launcher process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.paths import claim_run_dir
from hvdtrain.job.signals import FORWARDED_SIGNALS, ignore_at_exit
from hvdtrain.launch.request import RunRequest


@dataclass(frozen=True)
class Outcome:
    """How the launcher ended, and whether this process was told to stop while it ran."""

    code: int
    signalled: bool


def execute(request: RunRequest) -> Outcome:
    """Run exactly ``request`` (what ``--dry-run`` prints); return the launcher's exit status."""
    claim_run_dir(request.paths.root, os.getuid(), request.paths.fresh)
    for path, text in request.scripts:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700)
        with os.fdopen(fd, "w") as script:
            script.write(text)
    return run_argv(request.argv, request.env)


def run_argv(argv: Sequence[str], env: Mapping[str, str]) -> Outcome:
    """Run the launcher in the foreground, passing on the job's signals (mpirun and srun pass
    them to every rank's supervisor), and return its exit status. The handlers stay: a signal
    that comes after the launcher ended is passed to no one, and never fails a finished job."""
    launcher = next(arg for arg in argv if "=" not in arg and arg != "env")
    if shutil.which(launcher, path=env.get("PATH")) is None:
        raise HvdtrainError(f"{launcher} not found on PATH", "run `make install`, or pick another --launcher")
    child = subprocess.Popen(list(argv), env=dict(env))
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        child.send_signal(signum)  # a no-op once the launcher has ended

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    ignore_at_exit(FORWARDED_SIGNALS)
    return Outcome(child.wait(), bool(received))
