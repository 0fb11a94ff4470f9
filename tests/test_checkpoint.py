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
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


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
    with pytest.raises(HvdtrainError, match="unreadable"):
        checkpoint.read_checkpoint(path)
    torch.save({"something": "else"}, path)
    with pytest.raises(HvdtrainError, match="not an hvdtrain checkpoint"):
        checkpoint.read_checkpoint(path)
