import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.train.config import (
    TrainConfig,
    VisibleGpus,
    choose_device,
    default_threads,
    detect_gpus,
    epoch_seed,
    lr_at,
    lr_scale,
)


@pytest.mark.parametrize(("base", "size", "scaling", "expected"), [
    (0.1, 1, True, 0.1), (0.1, 4, True, 0.4), (0.1, 4, False, 0.1), (0.05, 2, True, 0.1),
])
def test_scaled_lr(base, size, scaling, expected):
    cfg = TrainConfig(lr=base, lr_scaling=scaling)
    assert lr_at(0, 10, cfg, lr_scale(cfg, size, size, on_gpu=False)) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.1), (5, 0.25), (10, 0.4), (50, 0.4)])
def test_lr_warms_up_linearly_to_the_scaled_lr(step, expected):
    cfg = TrainConfig(lr=0.1, warmup_epochs=1)
    assert lr_at(step, steps_per_epoch=10, cfg=cfg, scale=4) == pytest.approx(expected)


def test_lr_without_warmup_or_scaling():
    assert lr_at(0, 10, TrainConfig(lr=0.1), 4) == pytest.approx(0.4)
    assert lr_at(0, 10, TrainConfig(lr=0.1, lr_scaling=False, warmup_epochs=2), 4) == pytest.approx(0.1)


@pytest.mark.parametrize(("cores", "local", "expected"), [(2, 2, 1), (16, 4, 4), (1, 4, 1), (7, 2, 3)])
def test_default_threads(cores, local, expected):
    assert default_threads(cores, local) == expected


# visible GPUs x bound to this task x local rank x local size x requested device -> device or the refusal
@pytest.mark.parametrize(("visible", "bound", "local_rank", "local_size", "requested", "expected"), [
    (0, False, 1, 2, "auto", "cpu"),
    (8, False, 3, 8, "auto", "cuda:3"),  # one node, all its GPUs visible to every rank
    (4, False, 3, 4, "cuda", "cuda:3"),
    (8, False, 1, 2, "auto", "cuda:1"),  # more GPUs than ranks: the first ones
    (1, True, 3, 4, "auto", "cuda:0"),  # Slurm's per-task binding: each rank sees only its own GPU
    (1, True, 0, 1, "cuda", "cuda:0"),
    (1, False, 0, 1, "auto", "cuda:0"),  # one rank, one GPU
    (4, True, 2, 4, "cpu", "cpu"),
    (0, False, 0, 1, "cpu", "cpu"),
    (1, False, 1, 2, "auto", "refused"),  # a one-GPU workstation with 2 ranks: they would share it
    (2, False, 3, 4, "auto", "refused"),  # fewer GPUs than ranks on the node
    (2, True, 1, 4, "cuda", "refused"),
    (0, False, 0, 1, "cuda", "no CUDA"),
])
def test_choose_device_from_the_gpus_a_rank_sees(visible, bound, local_rank, local_size, requested, expected):
    gpus = VisibleGpus(visible, bound)
    if expected in ("refused", "no CUDA"):
        with pytest.raises(HvdtrainError, match=r"would share one|no CUDA device") as error:
            choose_device(requested, gpus, local_rank, local_size)
        assert expected != "refused" or "--gpus-per-node" in error.value.hint
    else:
        assert choose_device(requested, gpus, local_rank, local_size) == expected


def test_fp16_needs_a_gpu():
    with pytest.raises(HvdtrainError, match="--amp fp16 needs a CUDA device"):
        choose_device("auto", VisibleGpus(), 0, 1, amp="fp16")


@pytest.mark.parametrize(("variable", "bound"), [("", False), ("3", True), ("0,1", False), ("GPU-5f2c", True)])
def test_per_task_binding_is_one_visible_device(variable, bound):
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": variable}).bound_per_task is bound


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
    assert lr_at(step, steps_per_epoch=10, cfg=cfg, scale=2) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("op", "scaling", "on_gpu", "expected"), [
    ("average", True, False, 8), ("average", True, True, 8), ("average", False, True, 1),
    ("adasum", True, False, 1),  # Adasum combines without averaging
    ("adasum", True, True, 4),  # Horovod's Adasum on GPUs averages within a node first: x ranks per node
    ("adasum", False, True, 1),
])
def test_lr_scale(op, scaling, on_gpu, expected):
    assert lr_scale(TrainConfig(op=op, lr_scaling=scaling), world_size=8, local_size=4, on_gpu=on_gpu) == expected


def test_normalize_config_keys():
    from hvdtrain.train.config_file import normalize_config

    known = {"batch_size", "epochs", "no_lr_scaling"}
    assert normalize_config({"batch-size": 8, "epochs": 2, "no_lr_scaling": True}, known, "f") == {
        "batch_size": 8, "epochs": 2, "no_lr_scaling": True}
    with pytest.raises(HvdtrainError, match="did you mean 'epochs'"):
        normalize_config({"epoch": 3}, known, "f")
