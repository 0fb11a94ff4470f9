"""The one place that starts a launcher process."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from hvdtrain.errors import HvdtrainError


def run_argv(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the launcher in the foreground and return its exit status."""
    launcher = next(arg for arg in argv if "=" not in arg and arg != "env")
    if shutil.which(launcher, path=env.get("PATH")) is None:
        raise HvdtrainError(f"{launcher} not found on PATH", "run `make install`, or pick another --launcher")
    return subprocess.run(list(argv), env=dict(env), check=False).returncode
