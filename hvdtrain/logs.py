"""How hvdtrain's own log lines reach the user: progress on stdout, warnings on stderr, prefixed.

Library code logs through ``logging`` (``hvdtrain.train``, ``hvdtrain.run``); the entry points
(``hvdtrain train``, ``hvdtrain.setup()``) call ``show_log()`` once.
"""

from __future__ import annotations

import logging
import sys


class _Console(logging.Handler):
    """The log as a user reads it: progress lines on stdout, warnings on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        prefix = "hvdtrain: warning: " if record.levelno >= logging.WARNING else ""
        stream.write(f"{prefix}{record.getMessage()}\n")
        stream.flush()


def show_log() -> None:
    """Send ``hvdtrain``'s log records to the console (once per process)."""
    logger = logging.getLogger("hvdtrain")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown once, even when the user's code configures the root logger
    if not any(isinstance(handler, _Console) for handler in logger.handlers):
        logger.addHandler(_Console())
