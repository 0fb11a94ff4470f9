"""The one place that starts a launcher process."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from types import FrameType

from hvdtrain.errors import HvdtrainError

# Passed on to the launcher, which passes them to the ranks: USR1/USR2 are how Slurm warns a
# job of its time limit or preemption (mpirun and srun forward them to every process).
FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


def run_argv(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the launcher in the foreground, forwarding signals, and return its exit status."""
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
