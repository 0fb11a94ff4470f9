"""The one place that starts a launcher process."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from hvdtrain.errors import HvdtrainError


def run_argv(argv: Sequence[str]) -> int:
    """Run the launcher in the foreground and return its exit status."""
    if shutil.which(argv[0]) is None:
        raise HvdtrainError(f"{argv[0]} not found on PATH", "run `make install` (installs Open MPI)")
    return subprocess.run(list(argv), check=False).returncode
