import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.train.config import TrainConfig, choose_device, default_threads, epoch_seed, lr_at, scaled_lr


@pytest.mark.parametrize(("base", "size", "scaling", "expected"), [
    (0.1, 1, True, 0.1), (0.1, 4, True, 0.4), (0.1, 4, False, 0.1), (0.05, 2, True, 0.1),
])
def test_scaled_lr(base, size, scaling, expected):
    assert scaled_lr(base, size, scaling) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.1), (5, 0.25), (10, 0.4), (50, 0.4)])
def test_lr_warms_up_linearly_to_the_scaled_lr(step, expected):
    cfg = TrainConfig(lr=0.1, warmup_epochs=1)
    assert lr_at(step, steps_per_epoch=10, cfg=cfg, world_size=4) == pytest.approx(expected)


def test_lr_without_warmup_or_scaling():
    assert lr_at(0, 10, TrainConfig(lr=0.1), 4) == pytest.approx(0.4)
    assert lr_at(0, 10, TrainConfig(lr=0.1, lr_scaling=False, warmup_epochs=2), 4) == pytest.approx(0.1)


@pytest.mark.parametrize(("cores", "local", "expected"), [(2, 2, 1), (16, 4, 4), (1, 4, 1), (7, 2, 3)])
def test_default_threads(cores, local, expected):
    assert default_threads(cores, local) == expected


@pytest.mark.parametrize(("requested", "cuda", "local_rank", "expected"), [
    ("auto", False, 1, "cpu"), ("auto", True, 3, "cuda:3"), ("cuda", True, 0, "cuda:0"), ("cpu", True, 2, "cpu"),
])
def test_choose_device_pins_local_rank(requested, cuda, local_rank, expected):
    assert choose_device(requested, cuda, local_rank) == expected


def test_choose_device_cuda_without_gpu():
    with pytest.raises(HvdtrainError, match="no CUDA"):
        choose_device("cuda", False, 0)


def test_epoch_seed_depends_on_each_input():
    seeds = {epoch_seed(s, e, r) for s in range(3) for e in range(3) for r in range(3)}
    assert len(seeds) == 27


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epochs", 0, "--epochs 0"), ("batch_size", -1, "--batch-size"), ("lr", 0.0, "--lr"),
    ("momentum", 1.5, "--momentum"), ("optimizer", "lbfgs", "--optimizer"), ("device", "tpu", "--device"),
    ("warmup_epochs", -1.0, "--warmup-epochs"), ("threads_per_rank", 0, "--threads-per-rank"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(HvdtrainError, match=message):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(("schedule", "step", "expected"), [
    ("constant", 90, 0.2), ("cosine", 0, 0.2), ("cosine", 50, 0.1), ("cosine", 100, 0.0),
    ("step", 49, 0.2), ("step", 50, 0.02), ("step", 75, 0.002),
])
def test_lr_schedules_after_warmup(schedule, step, expected):
    cfg = TrainConfig(lr=0.1, epochs=10, lr_schedule=schedule)
    assert lr_at(step, steps_per_epoch=10, cfg=cfg, world_size=2) == pytest.approx(expected, abs=1e-12)


def test_adasum_does_not_scale_the_lr():
    assert lr_at(0, 10, TrainConfig(lr=0.1, op="adasum"), 4) == pytest.approx(0.1)


def test_normalize_config_keys():
    from hvdtrain.train.config_file import normalize_config

    known = {"batch_size", "epochs", "no_lr_scaling"}
    assert normalize_config({"batch-size": 8, "epochs": 2, "no_lr_scaling": True}, known, "f") == {
        "batch_size": 8, "epochs": 2, "no_lr_scaling": True}
    with pytest.raises(HvdtrainError, match="did you mean 'epochs'"):
        normalize_config({"epoch": 3}, known, "f")
