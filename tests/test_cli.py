"""The CLI as a user meets it: doctor, bad input, help."""

import json
import os
import subprocess
import sys

import pytest
from conftest import cli, hvdtrain

DOCTOR_FIELDS = {"python", "torch", "torch_cuda", "horovod", "horovod_error", "mpi_built", "gloo_built",
                 "nccl_built", "torch_ops", "built_against_torch", "built_against_mpi", "built_against_torch_cuda",
                 "built_against_cuda", "nccl_version", "gpu_operations", "compiler", "linked_mpi_library", "mpirun",
                 "mpirun_banner", "cpu_count", "libcuda", "cuda_available", "cuda_device_count", "local_ranks",
                 "network_interfaces", "problems",
                 "warnings", "ok"}


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
    assert "problem: mpirun was not found on PATH: `module load openmpi`" in done.stdout


def _commands(group, path=()):
    for name, command in group.commands.items():
        if not command.hidden:
            yield (*path, name)
            if hasattr(command, "commands"):
                yield from _commands(command, (*path, name))


def test_every_command_has_help_with_an_example():
    from hvdtrain.cli.main import cli as group

    paths = list(_commands(group))
    assert len(paths) >= 17
    for path in [(), *paths]:
        done = cli(*path, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout, path
        assert "Example" in done.stdout, f"hvdtrain {' '.join(path)} --help shows no example"
    assert cli("--version").stdout.strip().startswith("hvdtrain, version ")


def test_python_dash_m_works():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hvdtrain", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "hvdtrain" in done.stdout


def test_hostfile_show_prints_hosts_and_layout():
    done = cli("hostfile", "show", "hostfiles/commented", "-np", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["node01 slots=4", "node02 slots=4 max_slots=8", "node03 slots=2"]
    assert lines[4].split() == ["0", "0", "4", "0", "2", "node01"]
    assert lines[-1].split() == ["4", "0", "1", "1", "2", "node02"]


def test_hostfile_convert_round_trips(tmp_path):
    target = tmp_path / "hosts.json"
    assert cli("hostfile", "convert", "hostfiles/two-nodes", "--to", "json", "-o", str(target)).returncode == 0
    back = cli("hostfile", "convert", str(target), "--to", "mpich")
    assert back.stdout == "node01:4\nnode02:4\n"


def test_run_with_hostfile_dry_run():
    done = cli("run", "-np", "8", "--hostfile", "hostfiles/two-nodes", "--dry-run", "--", "true")
    assert done.returncode == 0, done.stderr
    assert " -H node01:4,node02:4 " in done.stdout


@pytest.mark.parametrize("fmt", ["openmpi", "mpich", "horovod", "json"])
def test_hostfile_convert_then_show_round_trips(tmp_path, fmt):
    source = tmp_path / "hosts"
    source.write_text("node01 slots=2\nrack0_blade1 slots=4\ngpu1.cluster.example.org\nfe80::1 slots=8\n")
    converted = tmp_path / f"hosts.{fmt}"
    done = cli("hostfile", "convert", str(source), "--to", fmt, "-o", str(converted))
    assert done.returncode == 0, done.stderr
    shown = cli("hostfile", "show", str(converted))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == source.read_text().replace("gpu1.cluster.example.org", "gpu1.cluster.example.org slots=1")


@pytest.mark.parametrize("command", [("hostfile", "show", "{hostfile}"), ("supervise", "--help"), ("--help",)])
def test_commands_that_do_not_train_import_neither_torch_nor_horovod(command, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=2\n")
    argv = [arg.replace("{hostfile}", str(hostfile)) for arg in command]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "hvdtrain", *argv], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "hvdtrain.cli.main" in imported and not imported & {"torch", "horovod", "mlflow", "tensorboard"}
