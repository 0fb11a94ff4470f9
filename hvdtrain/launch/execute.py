"""The one place that starts a launcher process."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.signals import FORWARDED_SIGNALS
from hvdtrain.launch.request import RunRequest


def execute(request: RunRequest) -> int:
    """Run exactly ``request`` (what ``--dry-run`` prints); return the launcher's exit status."""
    request.paths.root.mkdir(parents=True, exist_ok=True)
    return run_argv(request.argv, request.env)


def run_argv(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the launcher in the foreground, passing on the job's signals (mpirun and srun pass
    them to every rank's supervisor), and return its exit status."""
    launcher = next(arg for arg in argv if "=" not in arg and arg != "env")
    if shutil.which(launcher, path=env.get("PATH")) is None:
        raise HvdtrainError(f"{launcher} not found on PATH", "run `make install`, or pick another --launcher")
    child = subprocess.Popen(list(argv), env=dict(env))

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
