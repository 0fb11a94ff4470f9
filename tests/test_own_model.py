"""Train your own model: module:function specs, npz/csv files, config files, training options,
the Python API, run records and plots."""

import json
import os
import struct
import textwrap

import numpy as np
import pytest
import torch
from conftest import HVDTRAIN, REPO, cli, hvdtrain, train_mpi

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset


    def build(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], 32), nn.Tanh(), nn.Linear(32, num_classes))


    def data(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(512, 6, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long()
        return {"train": TensorDataset(x[:400], y[:400]), "val": TensorDataset(x[400:], y[400:]),
                "loss": nn.functional.cross_entropy}


    def pair():
        x = torch.randn(64, 3)
        return TensorDataset(x, torch.zeros(64, dtype=torch.long)), TensorDataset(x, torch.zeros(64, dtype=torch.long))


    def not_a_model(input_shape):
        return "a string"


    def broken():
        raise ValueError("no data today")
''')


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "mymodels.py").write_text(USER_MODULE)
    return tmp_path


def test_user_model_and_dataset_train_data_parallel(user_dir):
    out = user_dir / "out"
    done = hvdtrain("run", "-np", "2", "--", HVDTRAIN, "train", "--model", "mymodels:build", "--dataset",
                    "mymodels:data", "--epochs", "4", "--lr", "0.1", "--out", str(out), cwd=user_dir)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    assert summary["final_val_acc"] > 0.85  # the label is a linear function of the input: learnable


def test_npz_and_csv_datasets(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x[:240], y=y[:240], x_val=x[240:], y_val=y[240:])
    header = "f0,f1,f2,f3,f4,target\n"
    (tmp_path / "d.csv").write_text(header + "".join(",".join(map(str, [*row, label])) + "\n"
                                                     for row, label in zip(x, y, strict=True)))
    for dataset, extra in ((f"npz:{tmp_path / 'd.npz'}", []), (f"csv:{tmp_path / 'd.csv'}", ["--label-column",
                                                                                            "target"])):
        out = tmp_path / dataset[:3]
        done = hvdtrain("train", "--model", "mlp", "--dataset", dataset, *extra, "--epochs", "15", "--lr", "0.1",
                        "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert json.loads((out / "summary.json").read_text())["final_val_acc"] > 0.9


def test_training_log_is_shown_once_when_a_model_module_configures_logging(tmp_path):
    (tmp_path / "logged.py").write_text(
        "import logging\nfrom torch import nn\nlogging.basicConfig(level=logging.INFO)\n\n\n"
        "def build(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    done = hvdtrain("train", "--model", "logged:build", "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("done: 1 ranks") == 1 and "epoch 1/1" in done.stdout


def test_config_file_and_command_line_precedence(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("model: mlp\nepochs: 7\nbatch-size: 16\nno_lr_scaling: true\nshuffle: false\n")
    done = cli("train", "--config", str(config), "--epochs", "3", "--print-config")
    assert done.returncode == 0, done.stderr
    effective = __import__("yaml").safe_load(done.stdout)
    assert effective["model"] == "mlp" and effective["batch-size"] == 16 and effective["no-lr-scaling"] is True
    assert effective["epochs"] == 3 and effective["shuffle"] is False  # the command line wins
    # The printed config reads back as a config file.
    (tmp_path / "again.yaml").write_text(done.stdout)
    again = cli("train", "--config", str(tmp_path / "again.yaml"), "--print-config")
    assert again.stdout == done.stdout


def test_unknown_config_key_gets_a_hint(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 2\nbatchsize: 16\n")
    done = cli("train", "--config", str(config))
    assert done.returncode == 2
    assert "unknown option 'batchsize'" in done.stderr and "did you mean 'batch-size'?" in done.stderr


def _model(out):
    return torch.load(out / "model.pt")


def test_accumulate_equals_a_batch_twice_as_large(tmp_path):
    common = ("--model", "mlp", "--epochs", "2", "--no-shuffle", "--optimizer", "sgd", "--lr", "0.1")
    train_mpi(2, tmp_path / "acc", *common, "--batch-size", "16", "--accumulate", "2")
    train_mpi(2, tmp_path / "big", *common, "--batch-size", "32")
    accumulated, big = _model(tmp_path / "acc"), _model(tmp_path / "big")
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-5)
    train_mpi(2, tmp_path / "small", *common, "--batch-size", "16")
    assert not torch.allclose(_model(tmp_path / "small")["1.weight"], big["1.weight"])


def test_fp16_compression_trains_like_fp32(tmp_path):
    args = ("--model", "cnn", "--epochs", "5", "--lr", "0.05")
    fp32 = train_mpi(2, tmp_path / "fp32", *args)
    fp16 = train_mpi(2, tmp_path / "fp16", *args, "--compression", "fp16")
    assert fp16["param_checksum"] != fp32["param_checksum"]  # the option took effect
    assert abs(fp16["final_val_acc"] - fp32["final_val_acc"]) <= 0.03
    assert set(fp16["rank_checksums"]) == {fp16["param_checksum"]}


@pytest.mark.parametrize("extra", [("--clip-grad-norm", "0.5"), ("--amp", "bf16"), ("--op", "adasum"),
                                   ("--lr-schedule", "cosine", "--eval-every", "2")])
def test_training_options_keep_replicas_identical(extra, tmp_path):
    summary = train_mpi(2, tmp_path, "--model", "mlp", "--epochs", "2", *extra)
    assert set(summary["rank_checksums"]) == {summary["param_checksum"]}
    assert summary["final_val_acc"] > 0.5


def test_example_script_runs_data_parallel(tmp_path):
    done = hvdtrain("run", "-np", "2", "--", "python", str(REPO / "examples" / "own_script.py"), "--epochs", "3",
                    "--run-dir", str(tmp_path / "own"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    digests = {line.split()[-1] for line in done.stdout.splitlines() if "parameters" in line}
    ranks = [line for line in done.stdout.splitlines() if "of 2: parameters" in line]
    assert len(ranks) == 2 and len(digests) == 1
    final = [line for line in done.stdout.splitlines() if line.startswith("epoch 3:")]
    assert len(final) == 1 and float(final[0].split()[-1]) > 0.85  # whole lines: no rank's output spliced in
    assert len(list((tmp_path / "own").glob("ckpt-*-epoch00003.pt"))) == 1


def test_horovod_example_with_run_added_trains_data_parallel(tmp_path):
    done = hvdtrain("run", "-np", "2", "--", "python", str(REPO / "examples" / "horovod_script.py"), "--epochs",
                    "2", "--run-dir", str(tmp_path / "hvd"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    digests = {line.split()[-1] for line in done.stdout.splitlines() if "of 2: parameters" in line}
    assert len(digests) == 1 and "epoch 2 done" in done.stdout
    steps = [json.loads(line)["step"] for line in (tmp_path / "hvd" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 28, 30, 40, 50, 56]  # every 10 steps and each epoch's end (1797 / 2 ranks / 32: 28)


def test_run_record_and_plot(tmp_path):
    out = tmp_path / "run"
    summary = train_mpi(2, out, "--model", "mlp", "--epochs", "3", "--eval-every", "2")
    record = json.loads((out / "run.json").read_text())
    assert set(record) == {"versions", "config", "world_size", "layout", "command", "git_commit", "started", "ended"}
    assert record["versions"]["horovod"] == "0.28.1" and record["versions"]["torch"].startswith("2.13.0")
    assert record["config"]["epochs"] == 3 and record["config"]["eval_every"] == 2
    assert record["world_size"] == 2 and len(record["layout"]) == 2 and record["layout"] == summary["layout"]
    assert record["command"][1:3] == ["train", "--out"] and record["started"] <= record["ended"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if "train_loss" in m]
    assert ["val_acc" in m for m in epochs] == [False, True, True]  # epochs 2 and 3 (the last)
    done = hvdtrain("plot", str(out))
    assert done.returncode == 0, done.stderr
    png = (out / "metrics.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1600, 400)


def test_shell_completion():
    env = {**os.environ, "_HVDTRAIN_COMPLETE": "bash_source"}
    assert "_hvdtrain_completion" in hvdtrain(env=env).stdout
    env = {**os.environ, "_HVDTRAIN_COMPLETE": "bash_complete", "COMP_WORDS": "hvdtrain ho", "COMP_CWORD": "1"}
    assert "plain,hostfile" in hvdtrain(env=env).stdout
