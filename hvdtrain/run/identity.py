"""Which run a folder holds: a random id, kept in the run folder, that tags every checkpoint.

A requeued or restarted job opens the same folder, finds the same id, and so resumes its own
checkpoints and continues the same tracker runs. Checkpoints of any other run (another id in the
name) are never resumed without saying so, and never rotated away.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hvdtrain.atomic import write_atomic

IDENTITY_FILE = "hvdtrain-run.json"
RUN_ID = re.compile(r"^[0-9a-f]{8}$")  # what new_identity makes, and all a checkpoint name may hold


@dataclass(frozen=True)
class RunIdentity:
    """``hvdtrain-run.json``: the run's id, and the id its MLflow run got (None until it has one)."""

    run_id: str
    mlflow_run_id: str | None = None

    def with_mlflow(self, mlflow_run_id: str) -> RunIdentity:
        return replace(self, mlflow_run_id=mlflow_run_id)


def new_identity() -> RunIdentity:
    return RunIdentity(run_id=secrets.token_hex(4))


def read_identity(directory: Path) -> RunIdentity | None:
    """The identity of the run in ``directory``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((directory / IDENTITY_FILE).read_text())
        run_id, mlflow_run_id = data["run_id"], data.get("mlflow_run_id")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        return None
    return RunIdentity(run_id, mlflow_run_id if isinstance(mlflow_run_id, str) else None)


def write_identity(directory: Path, identity: RunIdentity) -> None:
    write_atomic(directory / IDENTITY_FILE, json.dumps(asdict(identity)) + "\n")
