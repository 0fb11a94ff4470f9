"""Real data-parallel training: mpirun starts the ranks, Horovod all-reduces the gradients."""

import json
import re

import pytest
import torch
from conftest import HVDTRAIN, hvdtrain, train_mpi

pytestmark = pytest.mark.mpi

# make demo's configuration (see Makefile).
DEMO = ("--model", "cnn", "--dataset", "digits", "--epochs", "10", "--batch-size", "32", "--lr", "0.05",
        "--warmup-epochs", "1")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, train_mpi(2, out, *DEMO)


def test_ranks_end_with_identical_parameters(demo_run):
    _, summary = demo_run
    assert summary["world_size"] == 2
    assert len(summary["rank_checksums"]) == 2
    assert set(summary["rank_checksums"]) == {summary["param_checksum"]}


def test_demo_configuration_learns_digits(demo_run):
    out, summary = demo_run
    assert summary["final_val_acc"] >= 0.95
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lines = [line for line in records if "train_loss" in line]  # one per epoch
    assert [line["epoch"] for line in lines] == list(range(1, 11))
    assert set(lines[0]) == {"step", "epoch", "train_loss", "val_loss", "val_acc", "lr", "samples_per_sec",
                             "world_size", "elapsed_s"}
    steps = [line for line in records if "loss" in line]  # every 10 optimizer steps (--log-every)
    assert set(steps[0]) == {"step", "epoch", "loss", "lr", "samples_per_sec"} and steps[0]["step"] == 10
    assert steps[-1]["loss"] < steps[0]["loss"] and lines[-1]["step"] == steps[-1]["step"] == 10 * 22  # 1437 / 64
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert lines[-1]["lr"] == pytest.approx(0.1)  # base LR 0.05 x 2 ranks after warmup
    assert all(line["world_size"] == 2 and line["samples_per_sec"] > 0 for line in lines)
    assert lines[-1]["val_acc"] == summary["final_val_acc"]


def test_allreduce_matches_one_rank_with_the_whole_batch(tmp_path):
    common = ("--model", "mlp", "--epochs", "2", "--no-lr-scaling", "--no-shuffle", "--optimizer", "sgd",
              "--lr", "0.1")
    train_mpi(2, tmp_path / "two", *common, "--batch-size", "16")
    one = hvdtrain("train", "--out", str(tmp_path / "one"), *common, "--batch-size", "32")
    assert one.returncode == 0, one.stderr
    two_ranks = torch.load(tmp_path / "two" / "model.pt")
    one_rank = torch.load(tmp_path / "one" / "model.pt")
    assert list(two_ranks) == list(one_rank)
    for name in one_rank:
        torch.testing.assert_close(two_ranks[name], one_rank[name], rtol=1e-5, atol=1e-6)
    # And the comparison can fail: a different batch split gives different parameters.
    assert not torch.allclose(torch.load(tmp_path / "two" / "model.pt")["1.weight"],
                              _train_alone(tmp_path / "other", common, "16")["1.weight"])


def _train_alone(out, common, batch_size):
    done = hvdtrain("train", "--out", str(out), *common, "--batch-size", batch_size)
    assert done.returncode == 0, done.stderr
    return torch.load(out / "model.pt")


def test_resume_is_exact(tmp_path):
    args = ("--model", "cnn", "--batch-size", "32", "--lr", "0.05", "--warmup-epochs", "1")
    straight = train_mpi(2, tmp_path / "straight", *args, "--epochs", "4")
    ckpt = tmp_path / "ckpt"
    first = train_mpi(2, tmp_path / "resumed", *args, "--epochs", "2", "--checkpoint-dir", str(ckpt))
    names = sorted(path.name for path in ckpt.glob("*.pt"))
    assert [re.sub("ckpt-[0-9a-f]{8}-", "ckpt-ID-", name) for name in names] == [
        "ckpt-ID-epoch00001.pt", "ckpt-ID-epoch00002.pt"]
    assert first["param_checksum"] != straight["param_checksum"]
    resumed = train_mpi(2, tmp_path / "resumed", *args, "--epochs", "4", "--checkpoint-dir", str(ckpt),
                        "--resume")
    assert resumed["param_checksum"] == straight["param_checksum"]
    assert set(resumed["rank_checksums"]) == {straight["param_checksum"]}
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in metrics if "train_loss" in line]
    assert epochs == [1, 2, 3, 4]  # the resumed run continues the same metrics.jsonl


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path):
    args = ("--model", "mlp", "--batch-size", "32", "--lr", "0.05")
    straight = train_mpi(2, tmp_path / "straight", *args, "--epochs", "4")
    ckpt = tmp_path / "ckpt"
    train_mpi(2, tmp_path / "first", *args, "--epochs", "3", "--checkpoint-dir", str(ckpt))
    (newest,) = ckpt.glob("ckpt-*-epoch00003.pt")
    newest.write_bytes(newest.read_bytes()[: len(newest.read_bytes()) // 2])  # a half-written file
    done = hvdtrain("run", "-np", "2", "--", HVDTRAIN, "train", *args, "--epochs", "4", "--checkpoint-dir",
                    str(ckpt), "--resume", "--out", str(tmp_path / "resumed"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{newest.name} is corrupt" in done.stderr
    assert f"using {newest.name.replace('epoch00003', 'epoch00002')}" in done.stderr
    assert "resuming from" in done.stdout and "(epoch 2 done, 0 batches into the next)" in done.stdout
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert resumed["param_checksum"] == straight["param_checksum"]  # epochs 3 and 4 trained again, exactly


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_each_launcher_keeps_replicas_in_sync(launcher, tmp_path):
    out = tmp_path / launcher
    done = hvdtrain("run", "-np", "2", "--launcher", launcher, "--", HVDTRAIN, "train", "--model", "mlp",
                    "--epochs", "2", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}


def test_hvdtrain_run_passes_the_exit_code_through(tmp_path):
    done = hvdtrain("run", "-np", "2", "--", HVDTRAIN, "train", "--model", "nope")
    assert done.returncode == 2
    assert "unknown model 'nope'" in done.stderr + done.stdout


def test_one_rank_under_mpirun_trains_exactly_like_the_plain_loop(tmp_path):
    # At world size 1 the gradient buckets' average is the identity, so the wrapper adds nothing;
    # clipping and accumulation (which synchronize around it) must still give exactly what the
    # single-process loop gives.
    common = ("--model", "mlp", "--epochs", "2", "--no-shuffle", "--optimizer", "sgd", "--lr", "0.1",
              "--batch-size", "16", "--accumulate", "2", "--clip-grad-norm", "0.5")
    under_mpi = train_mpi(1, tmp_path / "mpi", *common)
    alone = hvdtrain("train", "--out", str(tmp_path / "alone"), *common)
    assert alone.returncode == 0, alone.stderr
    assert under_mpi["world_size"] == 1
    plain = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert under_mpi["param_checksum"] == plain["param_checksum"]


def test_a_new_run_beside_another_runs_checkpoints_keeps_its_own_and_says_so(tmp_path):
    ckpt, args = tmp_path / "shared", ("--model", "mlp", "--batch-size", "32", "--device", "cpu")
    older = hvdtrain("train", *args, "--epochs", "5", "--checkpoint-dir", str(ckpt), "--out", str(tmp_path / "a"))
    assert older.returncode == 0, older.stderr
    theirs = {path: path.read_bytes() for path in ckpt.iterdir()}
    (older_id,) = {path.name.split("-")[1] for path in theirs}
    fresh = hvdtrain("train", *args, "--epochs", "2", "--checkpoint-dir", str(ckpt), "--auto-resume",
                     "--keep-checkpoints", "1", "--out", str(tmp_path / "b"))
    assert fresh.returncode == 0, fresh.stderr
    assert "resuming from" not in fresh.stdout and f"also holds checkpoints of run(s) {older_id}" in fresh.stderr
    assert {path: path.read_bytes() for path in theirs} == theirs  # the older run's files, untouched
    mine = sorted(path.name for path in ckpt.glob("*.pt") if older_id not in path.name)
    assert len(mine) == 1 and mine[0].endswith("-epoch00002.pt")  # its own newest, kept by its own rotation
    again = hvdtrain("train", *args, "--epochs", "3", "--checkpoint-dir", str(ckpt), "--auto-resume", "--out",
                     str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert f"resuming from {ckpt / mine[0]} (epoch 2 done" in again.stdout  # its own run, not the older one
