"""``run.log(**values)``: sums kept where the values are (on the GPU for a GPU loss), averaged over
calls and ranks with one all-reduce per flush, and written by rank 0 as one record.

A flush happens at the same places on every rank (every ``log_every`` optimizer steps, at the end of
an epoch, before a checkpoint), so the all-reduce always matches. No value is read back to the host
between flushes: logging a loss every step does not make the CPU wait for the GPU every step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from hvdtrain.run.trackers import Logged, Tracker
from hvdtrain.train.dist import Dist


class MetricLog:
    """This rank's sums and counts since the last flush, and rank 0's trackers."""

    def __init__(self, dist: Dist, trackers: Sequence[Tracker], logged: Logged) -> None:
        self.dist = dist
        self.trackers = list(trackers)
        self.logged = logged
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.whole: dict[str, bool] = {}  # every value logged under the name was an int
        self.samples = 0
        self.since = time.perf_counter()

    def add(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.detach().float().mean()
            elif not isinstance(value, (int, float)):
                raise TypeError(f"run.log({key}=...) takes numbers or tensors, not {type(value).__name__}")
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
            self.whole[key] = self.whole.get(key, True) and isinstance(value, int)

    def flush(self, step: int, epoch: int, lr: float | None) -> None:
        """Average what was logged since the last flush over calls and ranks; rank 0 writes it.
        Collective: every rank calls it at the same place (ranks that log the same names)."""
        keys, seconds = sorted(self.sums), time.perf_counter() - self.since
        if not keys:  # nothing logged (on any rank: they run the same code); a new window
            self.samples, self.since = 0, time.perf_counter()
            return
        local = [float(self.samples), *(float(self.sums[key]) for key in keys),
                 *(float(self.counts[key]) for key in keys)]
        # Horovod: one all-reduce for every value of the record.
        total = self.dist.allreduce_sum(torch.tensor(local, dtype=torch.float64),
                                        name="hvdtrain.log." + ",".join(keys)).tolist()
        record: dict[str, float] = {"step": step, "epoch": epoch}
        for i, key in enumerate(keys):
            mean = total[1 + i] / total[1 + len(keys) + i]
            record[key] = int(mean) if self.whole[key] and mean.is_integer() else mean
        if lr is not None:
            record.setdefault("lr", lr)
        if total[0] > 0 and seconds > 0:
            record.setdefault("samples_per_sec", total[0] / seconds)
        self.sums, self.counts, self.whole, self.samples, self.since = {}, {}, {}, 0, time.perf_counter()
        if self.logged.holds(record):
            return  # a resumed run computed this record again: it is already written
        for tracker in self.trackers:
            tracker.write(record)

    def pending(self) -> dict[str, Any]:
        """This rank's window as plain data, for a checkpoint: a resumed run finishes the same
        window and writes the same record as a run that never stopped."""
        return {"sums": {key: float(value) for key, value in self.sums.items()}, "counts": dict(self.counts),
                "whole": dict(self.whole), "samples": self.samples}

    def resume(self, pending: dict[str, Any]) -> None:
        self.sums, self.counts = dict(pending["sums"]), dict(pending["counts"])
        self.whole, self.samples = dict(pending["whole"]), int(pending["samples"])

    def close(self, status: str) -> None:
        for tracker in self.trackers:
            tracker.close(status)
        self.trackers = []
