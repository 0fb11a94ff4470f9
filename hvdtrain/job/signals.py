"""How a job is told to stop, and how it says it stopped: one signal set and the exit codes.

Slurm warns a job before its time limit or a preemption with the signal of ``sbatch --signal``.
The launcher (``hvdtrain run``), each rank's supervisor and the trainer all pass on or catch the
same set, so whichever of them the user names reaches the training loop.
"""

from __future__ import annotations

import atexit
import signal
from collections.abc import Iterable

# Passed on by hvdtrain run to the launcher and by each supervisor to its rank.
FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
# What --preempt-signal and `slurm --signal` may name: USR1 is hvdtrain's default; USR2 is what
# submitit recommends, because NCCL may use USR1; TERM is what Slurm sends at the end anyway.
PREEMPT_SIGNALS = ("USR1", "USR2", "TERM")
DEFAULT_PREEMPT_SIGNAL = "USR1"
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: every rank saved its place and stopped on the preemption signal


def preempt_signal_problem(name: str) -> str | None:
    """Why ``name`` cannot be a preemption signal, or None when it can."""
    if name in PREEMPT_SIGNALS:
        return None
    return f"{name!r} is not one of the signals hvdtrain passes to every rank ({', '.join(PREEMPT_SIGNALS)})"


def preempt_signals(name: str) -> tuple[signal.Signals, ...]:
    """The signals the trainer stops on: the named one, and TERM (Slurm's last word)."""
    return tuple(dict.fromkeys((signal.Signals[f"SIG{name}"], signal.SIGTERM)))


def ignore_at_exit(signals: Iterable[signal.Signals]) -> None:
    """Ignore ``signals`` once the interpreter starts to exit: Python puts back the default action
    (terminate) of every signal it handled when it finalizes, so a warning that lands in a finished
    process's last moments would otherwise end it with 128 + N, which Slurm counts as a failure.
    Registered when the handlers are installed, so it runs after every later exit handler
    (Horovod's shutdown, the user's)."""
    chosen = tuple(signals)

    def ignore() -> None:
        for signum in chosen:
            signal.signal(signum, signal.SIG_IGN)

    atexit.register(ignore)
