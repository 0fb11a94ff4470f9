"""Which run a ``Run`` continues, and from which checkpoint: rank 0 decides from the folders alone."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hvdtrain.errors import HvdtrainError
from hvdtrain.run.checkpoint import CheckpointFile, list_checkpoints, newest_good
from hvdtrain.run.identity import RunIdentity, new_identity, read_identity


@dataclass(frozen=True)
class ResumePlan:
    """This run's identity, the checkpoint it continues from (bytes verified), what to tell the user."""

    identity: RunIdentity
    new_run: bool = True  # False when it continues a run (its own, or the one it resumes from)
    other_run: bool = True  # the folder held no run or another one: its metrics.jsonl is not this run's
    path: Path | None = None
    data: bytes = b""
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()

    def with_identity(self, identity: RunIdentity) -> ResumePlan:
        return replace(self, identity=identity)


def _newest_run(found: list[CheckpointFile]) -> list[CheckpointFile]:
    """The checkpoints of the run that wrote the newest file among ``found``."""
    newest = max(found, key=lambda item: item.path.stat().st_mtime)
    return [item for item in found if item.run_id == newest.run_id]


def plan_resume(directory: Path | None, checkpoint_dir: Path | None, resume: object) -> ResumePlan:
    """``resume`` True: continue the run of ``directory`` (a new one when it holds none); False: a
    new run; a path: the newest good checkpoint there, of this run if it has any, else of the run
    that wrote the newest one (which this run then continues)."""
    existing = read_identity(directory) if directory is not None else None
    identity = existing if existing is not None and resume is not False else new_identity()
    infos: list[str] = []
    if isinstance(resume, bool):
        candidates = [item for item in list_checkpoints(checkpoint_dir) if item.run_id == identity.run_id] \
            if resume and checkpoint_dir is not None else []
        source = checkpoint_dir
    else:
        source = Path(str(resume))
        if not source.is_dir():
            raise HvdtrainError(f"resume: checkpoint folder {source} does not exist",
                                "point it at the checkpoints of an earlier run")
        found = list_checkpoints(source)
        if not found:
            raise HvdtrainError(f"resume: no checkpoint (ckpt-*.pt) in {source}",
                                "start without resuming, or point it at the folder of an earlier run")
        candidates = [item for item in found if item.run_id == identity.run_id] or _newest_run(found)
        if candidates[0].run_id != identity.run_id:
            infos.append(f"continuing run {candidates[0].run_id} from {source}")
            identity = RunIdentity(candidates[0].run_id)
    chosen, data, skipped = newest_good(candidates)
    if candidates and chosen is None:
        raise HvdtrainError(f"no usable checkpoint of run {identity.run_id} in {source} ({skipped[0]})",
                            "delete the damaged files to start afresh")
    warnings = [f"{problem}; using {chosen.path.name}" for problem in skipped if chosen is not None]
    others = sorted({item.run_id for item in list_checkpoints(checkpoint_dir) if item.run_id != identity.run_id}) \
        if checkpoint_dir is not None else []
    if others:
        warnings.append(f"{checkpoint_dir} also holds checkpoints of run(s) {', '.join(others)}: this is run "
                        f"{identity.run_id}; they are not resumed and never deleted")
    new_run = identity != existing and chosen is None
    if new_run and existing is not None:
        infos.append(f"starting run {identity.run_id} in {directory} (its earlier run {existing.run_id} is kept)")
    other_run = existing is None or existing.run_id != identity.run_id
    return ResumePlan(identity, new_run, other_run, chosen.path if chosen else None, data, tuple(warnings),
                      tuple(infos))
