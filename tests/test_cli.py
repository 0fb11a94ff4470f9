"""The CLI as a user meets it: doctor, bad input, help."""

import json
import os

import pytest
from conftest import REPO, hvdtrain

DOCTOR_FIELDS = {"python", "torch", "horovod", "horovod_error", "mpi_built", "gloo_built", "nccl_built",
                 "torch_ops", "built_against_torch", "built_against_mpi", "gpu_operations", "compiler",
                 "linked_mpi_library", "mpirun", "mpirun_banner", "cpu_count", "cuda_available",
                 "cuda_device_count", "problems", "ok"}


def test_doctor_json_on_this_install():
    done = hvdtrain("doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(report) == DOCTOR_FIELDS
    assert report["ok"] is True and report["problems"] == []
    assert report["horovod"] == "0.28.1" and report["torch"].startswith("2.13.0")
    assert report["mpi_built"] and report["gloo_built"] and report["torch_ops"]
    assert report["built_against_torch"] == report["torch"]
    assert report["built_against_mpi"] == report["mpirun"] and report["mpirun"].startswith("openmpi")
    assert "/libmpi.so" in report["linked_mpi_library"] and report["cpu_count"] >= 1


def test_doctor_exits_1_when_mpirun_is_missing(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty directory: no mpirun
    done = hvdtrain("doctor", env=env)
    assert done.returncode == 1
    assert "problem: mpirun was not found on PATH: install Open MPI" in done.stdout


BAD_INPUT = [
    (["train", "--model", "resnet9000", "--epochs", "1"], "unknown model 'resnet9000'"),
    (["train", "--dataset", "imagenet", "--epochs", "1"], "unknown dataset 'imagenet'"),
    (["train", "--epochs", "0"], "--epochs 0 must be at least 1"),
    (["train", "--epochs", "many"], "'many' is not a valid integer"),
    (["train", "--resume", "/nonexistent/ckpts", "--epochs", "1"], "/nonexistent/ckpts does not exist"),
    (["train", "--resume", "--epochs", "1"], "--resume needs to know where the checkpoints are"),
    (["run", "-np", "0", "--", "true"], "-np 0 is not a valid number of ranks"),
    (["run", "-np", "3", "-H", "a:1,b:1", "--", "true"], "-np 3 is more than the 2 slots"),
    (["run", "-np", "3", "-H", "a:1", "--oversubscribe", "--launcher", "horovodrun", "--", "true"],
     "horovodrun cannot run more ranks than slots"),
    (["run", "-np", "1", "-x", "BAD-NAME=1", "--", "true"], "'BAD-NAME' is not an environment variable name"),
    (["run", "-np", "1", "--ssh-option", "ProxyCommand=x", "--", "true"], "would run a command"),
    (["run", "-np", "1", "--mpi-args", "'unbalanced", "--", "true"], "balance the quotes"),
    (["doctor", "-H", "a:1", "--timeout", "0"], "0 is not in the range x>=1"),
    (["run", "-np", "1", "-H", "a;touch x:1", "--", "true"], "not a valid hostname"),
    (["run", "-np", "2"], "Missing argument 'COMMAND...'"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    (["run", "-np", "9", "--hostfile", "hostfiles/two-nodes", "--", "true"], "-np 9 is more than the 8 slots"),
    (["run", "-np", "1", "-H", "a", "--hostfile", "x", "--", "true"], "-H and --hostfile both name hosts"),
    (["run", "-np", "1", "--hostfile", "/nonexistent", "--", "true"], "cannot read hostfile /nonexistent"),
    (["hostfile", "show", "/etc/passwd"], "/etc/passwd:1: 'root:x:0:0:root:/root:/bin/bash' is not a valid"),
    (["hostfile", "convert", "hostfiles/two-nodes", "--to", "yaml"], "'yaml' is not one of"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    args = [str(REPO / arg) if arg.startswith("hostfiles/") else arg for arg in args]
    done = hvdtrain(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing lost


def test_every_command_has_help_with_an_example():
    for command in ([], ["doctor"], ["train"], ["run"]):
        done = hvdtrain(*command, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout
    assert "Example" in hvdtrain("train", "--help").stdout
    assert hvdtrain("--version").stdout.strip().startswith("hvdtrain, version ")


def test_python_dash_m_works():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hvdtrain", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "hvdtrain" in done.stdout


def test_hostfile_show_prints_hosts_and_layout():
    done = hvdtrain("hostfile", "show", "hostfiles/commented", "-np", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["node01 slots=4", "node02 slots=4 max_slots=8", "node03 slots=2"]
    assert lines[4].split() == ["0", "0", "4", "0", "2", "node01"]
    assert lines[-1].split() == ["4", "0", "1", "1", "2", "node02"]


def test_hostfile_convert_round_trips(tmp_path):
    target = tmp_path / "hosts.json"
    assert hvdtrain("hostfile", "convert", "hostfiles/two-nodes", "--to", "json", "-o", str(target)).returncode == 0
    back = hvdtrain("hostfile", "convert", str(target), "--to", "mpich")
    assert back.stdout == "node01:4\nnode02:4\n"


def test_run_with_hostfile_dry_run():
    done = hvdtrain("run", "-np", "8", "--hostfile", "hostfiles/two-nodes", "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    assert " -H node01:4,node02:4 " in done.stdout
