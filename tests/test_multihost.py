"""Real launches across hosts: Open MPI's and Horovod's ssh launchers reach two test hosts
(network namespaces with their own sshd), and the preflight checks them first."""

import json
import os
import sys

import pytest
from conftest import HVDTRAIN, hvdtrain

pytestmark = pytest.mark.mpi


def _ssh_flags(hosts):
    flags = ["--ssh-identity", str(hosts.ssh.identity)]
    for option in hosts.ssh.options:
        flags += ["--ssh-option", option]
    return flags


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_training_across_two_hosts(launcher, two_hosts, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{host} slots=1\n" for host in two_hosts.reachable))
    out = tmp_path / "out"
    # horovodrun takes no ssh options (hvdtrain refuses them); it sets StrictHostKeyChecking=no itself.
    ssh = _ssh_flags(two_hosts) if launcher == "mpirun" else ["--ssh-identity", str(two_hosts.ssh.identity)]
    done = hvdtrain("run", "-np", "2", "--hostfile", str(hostfile), "--launcher", launcher,
                    "--network-interface", two_hosts.interface, *ssh, "--",
                    HVDTRAIN, "train", "--model", "mlp", "--epochs", "2", "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Open MPI (or horovodrun) placed the ranks on two different nodes, as Horovod sees it.
    assert sorted(slot["host"] for slot in summary["layout"]) == sorted(two_hosts.reachable)
    assert all(slot["local_size"] == 1 and slot["cross_size"] == 2 for slot in summary["layout"])
    assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}


def test_preflight_passes_on_matching_hosts(two_hosts):
    done = hvdtrain("doctor", "-H", ",".join(two_hosts.reachable), *_ssh_flags(two_hosts), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [check["host"] for check in report["hosts"]] == list(two_hosts.reachable)
    assert all(check["reachable"] and not check["mismatches"] and not check["problem"]
               for check in report["hosts"])


def test_preflight_checks_the_network_interface_on_every_host(two_hosts):
    hosts = ",".join(two_hosts.reachable)
    done = hvdtrain("doctor", "-H", hosts, *_ssh_flags(two_hosts), "--network-interface", two_hosts.interface)
    assert done.returncode == 0, done.stdout + done.stderr
    missing = hvdtrain("doctor", "-H", hosts, *_ssh_flags(two_hosts), "--network-interface", "ib7", "--json")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    problems = [check["problem"] for check in json.loads(missing.stdout)["hosts"]]
    assert len(problems) == 2 and all(problem.startswith("network interface ib7 does not exist on this host (it "
                                                         f"has {two_hosts.interface}, lo)") for problem in problems)


def test_preflight_names_the_unreachable_host(two_hosts):
    # A hang would exceed the subprocess limit and fail the test: the per-host timeout bounds it.
    done = hvdtrain("doctor", "-H", f"{two_hosts.reachable[0]},{two_hosts.silent}", *_ssh_flags(two_hosts),
                    "--timeout", "10", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert rows[two_hosts.reachable[0]].split()[1:3] == ["ok", "same"]
    assert "FAIL" in rows[two_hosts.silent] and "ssh failed" in rows[two_hosts.silent]


def test_a_remote_rank_sees_the_callers_nccl_settings(two_hosts, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"{host} slots=1\n" for host in two_hosts.reachable))
    env = {**os.environ, "NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": two_hosts.interface, "UCX_TLS": "tcp"}
    report = 'import os, socket; print("seen", socket.gethostname(), os.environ.get("NCCL_DEBUG"), ' \
             'os.environ.get("NCCL_SOCKET_IFNAME"), os.environ.get("UCX_TLS"), os.environ.get("CUDA_VISIBLE_DEVICES"))'
    done = hvdtrain("run", "-np", "2", "--hostfile", str(hostfile), "--launcher", "mpirun", *_ssh_flags(two_hosts),
                    "--", sys.executable, "-c", report, env={**env, "CUDA_VISIBLE_DEVICES": "7"}, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("seen "))
    assert seen == sorted([host, "INFO", two_hosts.interface, "tcp", "None"] for host in two_hosts.reachable)
