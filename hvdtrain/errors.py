"""One error family for everything a user can get wrong; each error names its fix."""

from __future__ import annotations


class HvdtrainError(Exception):
    """A problem the user can fix. The CLI prints it as one line and exits with status 2."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.problem} (hint: {self.hint})" if self.hint else self.problem
