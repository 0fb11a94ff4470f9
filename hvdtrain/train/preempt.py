"""Stopping cleanly when Slurm says the job must end (time limit, preemption).

A signal only sets a flag. Every ``every`` steps all ranks add up their flags (one tiny
all-reduce), so they stop at the same step; rank 0 then saves a checkpoint of exactly that
step and every rank exits with ``PREEMPTED_EXIT``, which the sbatch templates turn into a requeue.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing torch here would delay the signal handler by seconds
    from hvdtrain.train.dist import Dist
    from hvdtrain.train.steps import StepEnd


class Preempted(Exception):
    """All ranks agreed to stop after ``step`` optimizer steps of epoch ``epoch + 1``."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"preempted in epoch {epoch + 1} after step {step}")
        self.epoch = epoch
        self.step = step


class StopRequest:
    """Installed first thing in ``hvdtrain train``, so a signal during start-up is not lost."""

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.requested = False
        for signum in signals:
            signal.signal(signum, self._request)

    def _request(self, signum: int, frame: FrameType | None) -> None:
        # Idempotent: mpirun signals the rank's whole process group and the supervisor forwards
        # the same signal, so one warning from Slurm can arrive twice.
        self.requested = True


class Preemption:
    """The step callback that ends the epoch with ``Preempted`` once every rank agrees to stop."""

    def __init__(self, dist: Dist, request: StopRequest, every: int) -> None:
        self.dist = dist
        self.request = request
        self.every = every

    def agreed(self, steps_done: int) -> bool:
        """True on every rank once any rank was signalled (checked every ``every`` steps)."""
        if steps_done % self.every:
            return False
        import torch

        flag = torch.tensor([1.0 if self.request.requested else 0.0], dtype=torch.float64)
        return bool(self.dist.allreduce_sum(flag, name="hvdtrain.preempt").item() > 0)  # Horovod

    def __call__(self, end: StepEnd) -> None:
        # Every rank calls agreed() at the same steps, so the all-reduce inside it always matches.
        if self.agreed(end.epoch * end.steps + end.step) and not end.last_of_epoch:
            raise Preempted(end.epoch, end.step)
