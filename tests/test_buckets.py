"""Gradient buckets: the plan (pure), and under real mpirun ranks the same training, bit for bit,
as Horovod's one all-reduce per gradient tensor."""

import json
import sys

import pytest
import torch
from conftest import REPO, hvdtrain, train_mpi

from hvdtrain.errors import HvdtrainError
from hvdtrain.train.buckets import plan_buckets
from hvdtrain.train.config import TrainConfig
from hvdtrain.train.dist import ReduceOptions

CPU32, CPU16 = ("cpu", "float32"), ("cpu", "float16")


def test_a_bucket_fills_up_to_the_cap_in_gradient_order():
    assert plan_buckets([(40, CPU32), (40, CPU32), (40, CPU32), (10, CPU32)], cap_bytes=100) == ((0, 1), (2, 3))


def test_a_tensor_over_the_cap_gets_a_bucket_of_its_own():
    assert plan_buckets([(10, CPU32), (500, CPU32), (10, CPU32)], cap_bytes=100) == ((0,), (1,), (2,))


def test_kinds_never_share_a_bucket_and_buckets_come_in_order_of_their_last_gradient():
    plan = plan_buckets([(10, CPU32), (10, CPU16), (10, CPU32), (10, CPU16), (10, CPU32)], cap_bytes=100)
    assert plan == ((1, 3), (0, 2, 4))


def test_every_tensor_is_in_exactly_one_bucket():
    tensors = [(size, CPU32 if size % 3 else CPU16) for size in (5, 70, 20, 33, 90, 1, 64, 8)]
    plan = plan_buckets(tensors, cap_bytes=96)
    assert sorted(index for bucket in plan for index in bucket) == list(range(len(tensors)))
    for bucket in plan:
        assert len({tensors[i][1] for i in bucket}) == 1
        assert len(bucket) == 1 or sum(tensors[i][0] for i in bucket) <= 96


def test_adasum_and_a_zero_cap_reduce_tensor_by_tensor():
    assert ReduceOptions().bucketed
    assert not ReduceOptions(bucket_mb=0).bucketed
    assert not ReduceOptions(op="adasum").bucketed


def test_a_negative_bucket_size_names_the_fix():
    with pytest.raises(HvdtrainError) as error:
        TrainConfig(bucket_mb=-1.0)
    assert str(error.value).startswith("--bucket-mb -1.0 is negative (hint: use --bucket-mb 0 ")


@pytest.mark.mpi
@pytest.mark.parametrize("extra", [("--accumulate", "2", "--clip-grad-norm", "0.5"), ("--compression", "fp16")],
                         ids=["accumulate-clip", "fp16"])
def test_buckets_train_exactly_like_one_all_reduce_per_tensor(extra, tmp_path):
    # 1 KiB buckets start all-reducing during backward, 25 MiB is one bucket at the step, 0 is
    # Horovod's DistributedOptimizer: every rank must end with the same parameters, bit for bit.
    common = ("--model", "cnn", "--epochs", "2", "--no-shuffle", "--lr", "0.05", *extra)
    runs = {mb: train_mpi(2, tmp_path / mb, *common, "--bucket-mb", mb) for mb in ("0.001", "25", "0")}
    for summary in runs.values():
        assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    assert len({summary["param_checksum"] for summary in runs.values()}) == 1
    assert runs["25"]["final_val_acc"] > 0.4  # it learns (chance: 0.1)
    # And the checksum can tell runs apart: one more epoch changes it.
    assert train_mpi(2, tmp_path / "three", *common[:3], "3", *common[4:])["param_checksum"] != \
        runs["25"]["param_checksum"]


@pytest.mark.mpi
def test_wrapping_before_moving_the_model_trains_like_the_usual_order(tmp_path):
    """hvdtrain.wrap_optimizer(...) then model.to(...): the buckets follow the parameters at the
    first zero_grad/backward, and 2 ranks end bit for bit where the usual order ends."""
    done = hvdtrain("run", "-np", "2", "--output-dir", str(tmp_path / "runs"), "--", sys.executable,
                    str(REPO / "tests" / "wrap_order_worker.py"), str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"wrap-order.rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["wrap_first"]["params"] == report["move_first"]["params"]
        assert report["wrap_first"]["grad_dtypes"] == ["torch.float64"] and report["wrap_first"]["buckets"] == 2
    assert reports[0]["wrap_first"]["params"] == reports[1]["wrap_first"]["params"]
    assert reports[0]["wrap_first"]["params"] != json.loads(json.dumps(_initial_params()))


def _initial_params():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).double()
    return [p.detach().flatten().tolist() for p in model.parameters()]
