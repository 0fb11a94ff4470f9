"""Where rank 0 writes a run's metric records: ``metrics.jsonl`` always; TensorBoard and MLflow when
installed (``pip install hvdtrain[tensorboard]``, ``hvdtrain[mlflow]``).

Each record is one flat dict with ``step`` (optimizer steps so far) and ``epoch`` (1-based) and
numbers. A requeued or restarted run opens the same TensorBoard folder and the same MLflow run (its
id is kept in the run folder), and records a resumed run computes again are not written twice.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hvdtrain.errors import HvdtrainError
from hvdtrain.run.identity import RunIdentity

METRICS_FILE = "metrics.jsonl"
TRACKERS = ("tensorboard", "mlflow")  # besides metrics.jsonl, which is always written
MLFLOW_DB = "mlflow.db"  # the local store when MLFLOW_TRACKING_URI is not set
DEFAULT_EXPERIMENT = "hvdtrain"
TRACKERS_VARIABLE = "HVDTRAIN_TRACKERS"

Record = Mapping[str, float]


class Tracker(Protocol):
    def write(self, record: Record) -> None: ...
    def close(self, status: str) -> None: ...  # "FINISHED", or "KILLED" on a preemption


def installed_trackers() -> tuple[str, ...]:
    return tuple(name for name in TRACKERS if importlib.util.find_spec(name) is not None)


def choose_trackers(asked: Sequence[str] | None, env: Mapping[str, str]) -> tuple[str, ...]:
    """The trackers asked for, else those named in ``$HVDTRAIN_TRACKERS`` (comma-separated; "none"
    for metrics.jsonl alone), else every one installed. An unknown or missing one is an error."""
    if asked is None and TRACKERS_VARIABLE in env:
        asked = [name.strip() for name in env[TRACKERS_VARIABLE].split(",") if name.strip() not in ("", "none")]
    if asked is None:
        return installed_trackers()
    for name in asked:
        if name not in TRACKERS:
            raise HvdtrainError(f"unknown tracker {name!r}", f"use one of {', '.join(TRACKERS)}")
        if name not in installed_trackers():
            raise HvdtrainError(f"tracker {name!r} is not installed", f"pip install 'hvdtrain[{name}]'")
    return tuple(asked)


@dataclass(frozen=True)
class Logged:
    """How far ``metrics.jsonl`` already goes: its last step and the keys written at that step."""

    step: int = -1
    keys: frozenset[str] = field(default_factory=frozenset)

    def holds(self, record: Record) -> bool:
        """True when a resumed run computes a record it already wrote before it stopped."""
        step = int(record["step"])
        return step < self.step or (step == self.step and set(record) <= self.keys)


def read_logged(path: Path) -> Logged:
    """The end of an existing ``metrics.jsonl`` (a half-written last line is ignored)."""
    records = []
    try:
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    except OSError:
        return Logged()
    steps = [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]
    if not steps:
        return Logged()
    last = steps[-1]["step"]
    return Logged(last, frozenset(key for r in steps if r["step"] == last for key in r))


class JsonlTracker:
    """One JSON line per record in ``metrics.jsonl``, appended and flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: Record) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(dict(record)) + "\n")

    def close(self, status: str) -> None:
        return None


class TensorBoardTracker:
    """Scalars in ``tensorboard/<run id>/``: one folder per run, continued across requeues."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: Record) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MlflowTracker:
    """One MLflow run per hvdtrain run: ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the run
    folder; the experiment is ``$MLFLOW_EXPERIMENT_NAME`` or ``hvdtrain``."""

    def __init__(self, env: Mapping[str, str], directory: Path, identity: RunIdentity) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic"):  # a new local store's schema set-up, line by line
            logging.getLogger(name).setLevel(logging.WARNING)
        uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(directory / MLFLOW_DB).absolute()}"
        self.client = MlflowClient(tracking_uri=uri)
        if identity.mlflow_run_id is not None:
            self.run_id = identity.mlflow_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = env.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=f"{directory.name}-{identity.run_id}",
                                     tags={"hvdtrain.run_id": identity.run_id})
        self.run_id = run.info.run_id

    def write(self, record: Record) -> None:
        from mlflow.entities import Metric

        step, stamp = int(record["step"]), int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), stamp, step)
                                                    for key, value in record.items() if key != "step"])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def open_trackers(names: Sequence[str], directory: Path, identity: RunIdentity,
                  env: Mapping[str, str]) -> tuple[list[Tracker], RunIdentity]:
    """Rank 0's trackers, ``metrics.jsonl`` last (it is what a resumed run reads back); and the
    identity, with the MLflow run id once there is one."""
    trackers: list[Tracker] = []
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker(directory / "tensorboard" / identity.run_id))
    if "mlflow" in names:
        mlflow = MlflowTracker(env, directory, identity)
        trackers.append(mlflow)
        identity = identity.with_mlflow(mlflow.run_id)
    trackers.append(JsonlTracker(directory / METRICS_FILE))
    return trackers, identity
