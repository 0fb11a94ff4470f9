"""What happens after each optimizer step, as one list of callbacks (``Runtime.on_step``).

Each callback takes a ``StepEnd``. The worker builds the list: Horovod elastic's commits, and a
progress bar on an interactive rank 0. (Progress for failure reports, and the preemption check,
are ``hvdtrain.Run``'s.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class StepEnd:
    """An optimizer step just finished."""

    epoch: int  # 0-based
    step: int  # optimizer steps done in this epoch, 1-based
    steps: int  # optimizer steps in a whole epoch
    samples: int  # samples this rank took in the step

    @property
    def last_of_epoch(self) -> bool:
        return self.step == self.steps


StepCallback = Callable[[StepEnd], None]


class ProgressBar:
    """``epoch 3/10 [#########-----------] 45/100`` on one terminal line, redrawn in place."""

    def __init__(self, epochs: int, stream: TextIO = sys.stdout, width: int = 30) -> None:
        self.epochs, self.stream, self.width = epochs, stream, width

    def __call__(self, end: StepEnd) -> None:
        filled = self.width * end.step // max(end.steps, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\repoch {end.epoch + 1}/{self.epochs} [{bar}] {end.step}/{end.steps}")
        if end.last_of_epoch:
            self.stream.write("\n")
        self.stream.flush()
