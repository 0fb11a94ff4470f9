"""Stopping cleanly when Slurm says the job must end (time limit, preemption).

A signal only sets a flag. Every few steps all ranks add up their flags (one tiny all-reduce, in
``Run.batches``), so they stop at the same step; rank 0 then saves a checkpoint of exactly that step
and every rank ends with ``Preempted``, exit status ``PREEMPTED_EXIT``, which the sbatch templates
turn into a requeue.

The handlers are installed once per process, as early as possible (``hvdtrain.setup()``, or the
``hvdtrain train`` command before its slow imports), and never removed: a signal that arrives after
the last step, while the script evaluates, writes its summary or tears Horovod down, sets a flag no
one reads, and the finished run exits 0. (After the last exit handler the signals are ignored.)
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from types import FrameType

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.signals import (
    DEFAULT_PREEMPT_SIGNAL,
    PREEMPTED_EXIT,
    ignore_at_exit,
    preempt_signal_problem,
    preempt_signals,
)

# Set by the sbatch templates to the signal of `slurm submit --signal`, so a script stops on the
# signal its job is warned with.
PREEMPT_SIGNAL_VARIABLE = "HVDTRAIN_PREEMPT_SIGNAL"


class Preempted(SystemExit):
    """Every rank agreed to stop; rank 0 saved the place. Ends the process with exit status 75 and
    no traceback (a ``SystemExit``), so library code never calls ``sys.exit``."""

    def __init__(self, epoch: int, batch: int, saved: str | None) -> None:
        super().__init__(PREEMPTED_EXIT)
        self.epoch = epoch  # 0-based epoch it stopped in
        self.batch = batch  # batches of that epoch already done
        self.saved = saved  # the checkpoint written, or None without a checkpoint folder


def preempt_signal_name(env: Mapping[str, str], explicit: str | None = None) -> str:
    """The signal to stop on: the one asked for, else ``$HVDTRAIN_PREEMPT_SIGNAL``, else USR1."""
    name = explicit or env.get(PREEMPT_SIGNAL_VARIABLE) or DEFAULT_PREEMPT_SIGNAL
    problem = preempt_signal_problem(name)
    if problem:
        source = "--preempt-signal" if explicit else PREEMPT_SIGNAL_VARIABLE
        raise HvdtrainError(f"{source} {problem}", f"use {DEFAULT_PREEMPT_SIGNAL}")
    return name


class StopFlag:
    """Raised by any of the stop signals; read by the ranks' agreement."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requested = False
        for signum in preempt_signals(name):
            signal.signal(signum, self._request)
        ignore_at_exit(preempt_signals(name))

    def _request(self, signum: int, frame: FrameType | None) -> None:
        # Idempotent: mpirun signals the rank's whole process group and the supervisor forwards
        # the same signal, so one warning from Slurm can arrive twice.
        self.requested = True


_installed: list[StopFlag] = []


def catch_stop_signals(env: Mapping[str, str], explicit: str | None = None) -> StopFlag:
    """Install the handlers once for this process; later calls return the same flag (unless they
    name another signal, or someone put other handlers in place since)."""
    if _installed and (explicit is None or explicit == _installed[0].name) and all(
            signal.getsignal(signum) == _installed[0]._request for signum in preempt_signals(_installed[0].name)):
        return _installed[0]
    _installed[:] = [StopFlag(preempt_signal_name(env, explicit))]
    return _installed[0]
