import pytest

from hvdtrain.errors import HvdtrainError
from hvdtrain.install.preflight import HostCheck, compare_reports, interpret, render_table
from hvdtrain.launch.ssh import SshSettings, build_ssh_argv

LOCAL = {"python": "3.11.7", "torch": "2.13.0+cpu", "horovod": "0.28.1", "mpirun": "openmpi 4.1.4",
         "mpi_built": True, "gloo_built": True, "nccl_built": False, "built_against_torch": "2.13.0+cpu",
         "built_against_mpi": "openmpi 4.1.4", "cpu_count": 2, "problems": []}


def test_compare_reports_ignores_what_may_differ():
    assert compare_reports(LOCAL, {**LOCAL, "cpu_count": 64}) == ()
    assert compare_reports(LOCAL, {**LOCAL, "torch": "2.12.0", "horovod": None}) == (
        "torch: here 2.13.0+cpu, there 2.12.0", "horovod: here 0.28.1, there None")


@pytest.mark.parametrize(("code", "stdout", "stderr", "reachable", "problem"), [
    (0, '{"problems": []}', "", True, ""),
    (1, '{"problems": ["mpirun was not found on PATH"]}', "", True, "mpirun was not found on PATH"),
    (255, "", "ssh: connect to host n2 port 22: No route to host\n", False,
     "ssh failed: ssh: connect to host n2 port 22: No route to host"),
    (127, "", "bash: /venv/bin/hvdtrain: No such file or directory\n", True,
     "hvdtrain doctor did not run there: bash: /venv/bin/hvdtrain: No such file or directory"),
])
def test_interpret(code, stdout, stderr, reachable, problem):
    check = interpret("n2", code, stdout, stderr, {"problems": []}, 0.5)
    assert (check.reachable, check.problem) == (reachable, problem)
    assert check.ok is (reachable and not problem)


def test_render_table():
    table = render_table([HostCheck("node01", True, "", (), 1.25),
                          HostCheck("node02", True, "", ("torch: here 2.13.0, there 2.12.0",), 1.0),
                          HostCheck("n3", False, "no answer within 10 s", (), 10.0)])
    assert table.splitlines() == [
        "host    ssh  versions  time   verdict",
        "node01  ok   same        1.2s ok",
        "node02  ok   DIFFER      1.0s torch: here 2.13.0, there 2.12.0",
        "n3      FAIL -          10.0s no answer within 10 s",
    ]


def test_ssh_argv_quotes_the_remote_command():
    settings = SshSettings(port=2222, identity=None, options=("StrictHostKeyChecking=accept-new",))
    argv = build_ssh_argv("node01", ["/opt/my env/bin/hvdtrain", "doctor", "--json"], settings, timeout_s=5)
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "-o",
                    "StrictHostKeyChecking=accept-new", "node01", "--", "'/opt/my env/bin/hvdtrain' doctor --json"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"port": 0}, "not a TCP port"), ({"port": 70000}, "not a TCP port"),
    ({"identity": "/my keys/id"}, "contains whitespace"), ({"options": ("-oProxyCommand=x",)}, "not KEY=VALUE"),
    ({"options": ("ProxyCommand=sh -c x",)}, "not KEY=VALUE"),
    ({"options": ("ProxyCommand=$(touch${IFS}x)",)}, "would run a command"),
    ({"options": ("localcommand=x",)}, "would run a command"),
])
def test_ssh_settings_validation(kwargs, message):
    from pathlib import Path

    if "identity" in kwargs:
        kwargs["identity"] = Path(kwargs["identity"])
    with pytest.raises(HvdtrainError, match=message):
        SshSettings(**kwargs)
