"""How a job is told to stop, and how it says it stopped: one signal set and the exit codes.

Slurm warns a job before its time limit or a preemption with the signal of ``sbatch --signal``.
The launcher (``hvdtrain run``), each rank's supervisor and the trainer all pass on or catch the
same set, so whichever of them the user names reaches the training loop.
"""

from __future__ import annotations

import signal

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
