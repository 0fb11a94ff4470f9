"""Checkpoint files, run identity and the resume decision (pure, on real files), and the dedupe of
metric records a resumed run computes again."""

import io
import json

import pytest
import torch

from hvdtrain.errors import HvdtrainError
from hvdtrain.run import checkpoint
from hvdtrain.run.identity import IDENTITY_FILE, RunIdentity, read_identity, write_identity
from hvdtrain.run.resume import plan_resume
from hvdtrain.run.trackers import Logged, read_logged

A, B = "aaaaaaaa", "bbbbbbbb"


def _write(directory, run_id, epoch, batch=0, keep=10):
    path = checkpoint.checkpoint_path(directory, run_id, epoch, batch)
    state = {"objects": {"model": {"w": torch.full((3,), float(epoch))}}, "epoch": epoch, "batch": batch}
    checkpoint.write_checkpoint(path, checkpoint.encode(state), run_id, keep)
    return path


def test_write_then_read_round_trips(tmp_path):
    path = _write(tmp_path, A, 3)
    state = checkpoint.decode(checkpoint.read_verified(path), path)
    assert state["epoch"] == 3 and state["schema_version"] == checkpoint.SCHEMA_VERSION
    assert torch.equal(state["objects"]["model"]["w"], torch.full((3,), 3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]  # no temp files


def test_places_sort_and_names_carry_the_run(tmp_path):
    for epoch, batch in ((1, 0), (1, 17), (2, 0), (0, 5)):
        _write(tmp_path, A, epoch, batch)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "ckpt-epoch00009.pt").write_text("an old name without a run: not ours")
    assert [found.path.name for found in checkpoint.list_checkpoints(tmp_path)] == [
        f"ckpt-{A}-epoch00000-batch000005.pt", f"ckpt-{A}-epoch00001.pt", f"ckpt-{A}-epoch00001-batch000017.pt",
        f"ckpt-{A}-epoch00002.pt"]
    assert checkpoint.list_checkpoints(tmp_path / "missing") == []


def test_rotation_keeps_the_newest_of_its_own_run_and_never_touches_another(tmp_path):
    other = [_write(tmp_path, B, epoch) for epoch in (48, 49, 50)]  # an older, longer run
    for epoch in range(1, 6):
        written = _write(tmp_path, A, epoch, keep=2)
        assert written.exists()  # never deleted right after it was written
    mine = [found.epoch for found in checkpoint.list_checkpoints(tmp_path) if found.run_id == A]
    assert mine == [4, 5]
    assert all(path.exists() and checkpoint.checksum_path(path).exists() for path in other)


def test_a_damaged_file_is_a_clear_error(tmp_path):
    path = _write(tmp_path, A, 1)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HvdtrainError, match="corrupt \\(sha256 mismatch"):
        checkpoint.read_verified(path)
    checkpoint.checksum_path(path).unlink()
    with pytest.raises(HvdtrainError, match="unreadable"):
        checkpoint.read_verified(path)
    buffer = io.BytesIO()
    torch.save({"something": "else"}, buffer)
    with pytest.raises(HvdtrainError, match="not an hvdtrain checkpoint"):
        checkpoint.decode(buffer.getvalue(), path)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("owned",))

    buffer = io.BytesIO()
    torch.save({"schema_version": checkpoint.SCHEMA_VERSION, "x": Payload()}, buffer)
    with pytest.raises(HvdtrainError, match="unreadable"):
        checkpoint.decode(buffer.getvalue(), tmp_path / "evil.pt")


def test_resume_continues_the_folders_run_from_its_newest_good_checkpoint(tmp_path):
    write_identity(tmp_path, RunIdentity(A))
    for epoch in (1, 2, 3):
        _write(tmp_path, A, epoch)
    newest = checkpoint.checkpoint_path(tmp_path, A, 3)
    newest.write_bytes(newest.read_bytes()[:-10])
    plan = plan_resume(tmp_path, tmp_path, True)
    assert plan.identity.run_id == A and not plan.new_run
    assert plan.path == checkpoint.checkpoint_path(tmp_path, A, 2) and plan.data
    assert plan.warnings == (f"checkpoint {newest} is corrupt (sha256 mismatch: truncated or overwritten); "
                             f"using ckpt-{A}-epoch00002.pt",)
    for epoch in (1, 2):
        checkpoint.checksum_path(checkpoint.checkpoint_path(tmp_path, A, epoch)).write_text("0" * 64)
    with pytest.raises(HvdtrainError, match=f"no usable checkpoint of run {A}"):
        plan_resume(tmp_path, tmp_path, True)


def test_a_new_run_beside_another_runs_checkpoints_says_so_and_leaves_them(tmp_path):
    run_dir, shared = tmp_path / "new", tmp_path / "shared"
    for epoch in (49, 50):
        _write(shared, B, epoch)
    plan = plan_resume(run_dir, shared, True)  # a folder with no run yet: a new one
    assert plan.new_run and plan.path is None and plan.identity.run_id != B
    assert any(f"also holds checkpoints of run(s) {B}" in line and "not resumed" in line for line in plan.warnings)
    fresh = plan_resume(run_dir, shared, False)
    assert fresh.new_run and fresh.path is None


def test_a_new_run_in_a_folder_with_a_run_gets_a_new_identity(tmp_path):
    write_identity(tmp_path, RunIdentity(A, "mlflow-1"))
    _write(tmp_path, A, 1)
    plan = plan_resume(tmp_path, tmp_path, False)
    assert plan.new_run and plan.identity.run_id != A and plan.identity.mlflow_run_id is None
    assert any(f"its earlier run {A} is kept" in line for line in plan.infos)


def test_an_explicit_folder_resumes_the_run_that_wrote_its_newest_checkpoint(tmp_path):
    source = tmp_path / "ckpts"
    _write(source, A, 1)
    plan = plan_resume(tmp_path / "out", source, source)
    assert plan.identity.run_id == A and not plan.new_run and plan.path == checkpoint.checkpoint_path(source, A, 1)
    assert plan.infos == (f"continuing run {A} from {source}",)
    with pytest.raises(HvdtrainError, match="does not exist"):
        plan_resume(None, None, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HvdtrainError, match="no checkpoint"):
        plan_resume(None, None, tmp_path / "empty")


@pytest.mark.parametrize("content", ['{"run_id": "../../etc"}', "not json", '{"run_id": 7}'])
def test_a_planted_identity_is_not_used(tmp_path, content):
    (tmp_path / IDENTITY_FILE).write_text(content)
    assert read_identity(tmp_path) is None


def test_records_a_resumed_run_already_wrote_are_recognised(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 5, "epoch": 1, "loss": 1.0}, {"step": 10, "epoch": 1, "loss": 0.5},
             {"step": 10, "epoch": 1, "accuracy": 0.9}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 15, "ep')  # cut short
    logged = read_logged(path)
    assert logged == Logged(10, frozenset({"step", "epoch", "loss", "accuracy"}))
    assert logged.holds({"step": 5, "epoch": 1, "loss": 1.0})
    assert logged.holds({"step": 10, "epoch": 1, "accuracy": 0.9})
    assert not logged.holds({"step": 10, "epoch": 1, "val_loss": 0.3})
    assert not logged.holds({"step": 15, "epoch": 2, "loss": 0.1})
    assert read_logged(tmp_path / "missing") == Logged()
