import pytest
import torch

from hvdtrain.errors import HvdtrainError
from hvdtrain.train import checkpoint
from hvdtrain.train.config import TrainConfig
from hvdtrain.train.models import build_model


def _state(epoch: int) -> dict:
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return checkpoint.build_checkpoint(model, optimizer, epoch, TrainConfig(model="mlp"), world_size=2)


def test_write_then_read_round_trips(tmp_path):
    state = _state(3)
    path = checkpoint.checkpoint_path(tmp_path, 3)
    checkpoint.write_checkpoint(path, state)
    loaded = checkpoint.read_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["schema_version"] == checkpoint.SCHEMA_VERSION
    assert loaded["config"]["model"] == "mlp" and loaded["sampler"]["next_epoch"] == 3
    for name, tensor in state["model"].items():
        assert torch.equal(loaded["model"][name], tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]  # no temp files


def test_find_latest_picks_the_most_epochs(tmp_path):
    for epoch in (2, 10, 9):
        checkpoint.write_checkpoint(checkpoint.checkpoint_path(tmp_path, epoch), _state(epoch))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert checkpoint.find_latest(tmp_path) == checkpoint.checkpoint_path(tmp_path, 10)


def test_find_latest_errors(tmp_path):
    with pytest.raises(HvdtrainError, match="does not exist"):
        checkpoint.find_latest(tmp_path / "missing")
    with pytest.raises(HvdtrainError, match="no checkpoint"):
        checkpoint.find_latest(tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = checkpoint.checkpoint_path(tmp_path, 1)
    checkpoint.write_checkpoint(path, _state(1))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HvdtrainError, match="corrupt \\(sha256 mismatch"):
        checkpoint.read_checkpoint(path)
    checkpoint.checksum_path(path).unlink()
    with pytest.raises(HvdtrainError, match="unreadable"):
        checkpoint.read_checkpoint(path)
    checkpoint.write_checkpoint(path, {"something": "else"})
    with pytest.raises(HvdtrainError, match="not an hvdtrain checkpoint"):
        checkpoint.read_checkpoint(path)


def test_keep_only_the_newest(tmp_path):
    for epoch in range(1, 6):
        checkpoint.write_checkpoint(checkpoint.checkpoint_path(tmp_path, epoch), _state(epoch), keep=2)
    assert [place for place, _ in checkpoint.list_checkpoints(tmp_path)] == [(4, 0), (5, 0)]
    assert len(list(tmp_path.glob("*.sha256"))) == 2


def test_read_latest_good_skips_damaged_ones(tmp_path):
    for epoch in (1, 2, 3):
        checkpoint.write_checkpoint(checkpoint.checkpoint_path(tmp_path, epoch), _state(epoch))
    newest = checkpoint.checkpoint_path(tmp_path, 3)
    newest.write_bytes(newest.read_bytes()[:-10])
    path, state, skipped = checkpoint.read_latest_good(tmp_path)
    assert path == checkpoint.checkpoint_path(tmp_path, 2) and state["epoch"] == 2
    assert len(skipped) == 1 and "ckpt-epoch00003.pt is corrupt" in skipped[0]
    for epoch in (1, 2):
        checkpoint.checksum_path(checkpoint.checkpoint_path(tmp_path, epoch)).write_text("0" * 64)
    with pytest.raises(HvdtrainError, match="no usable checkpoint"):
        checkpoint.read_latest_good(tmp_path)


def test_state_checksum_sees_parameters_and_optimizer_state():
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = checkpoint.state_checksum(model, optimizer)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    optimizer.step()
    after_step = checkpoint.state_checksum(model, optimizer)
    assert before != after_step
    optimizer.state_dict()["state"][0]["momentum_buffer"].add_(1.0)
    assert checkpoint.state_checksum(model, optimizer) != after_step


def test_preemption_checkpoints_sort_between_epochs(tmp_path):
    for epoch, step in ((1, 0), (1, 17), (2, 0), (0, 5)):
        checkpoint.write_checkpoint(checkpoint.checkpoint_path(tmp_path, epoch, step), _state(epoch))
    assert [path.name for _, path in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-epoch00000-step000005.pt", "ckpt-epoch00001.pt", "ckpt-epoch00001-step000017.pt", "ckpt-epoch00002.pt"]
