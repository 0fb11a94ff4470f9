import shlex

import pytest
from conftest import check_golden, hvdtrain

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts import parse_host_list
from hvdtrain.launch.mpirun import build_mpirun_argv
from hvdtrain.launch.plan import build_plan, select_env_names

ENV = {"PATH": "/usr/bin", "HOME": "/root", "HOROVOD_FUSION_THRESHOLD": "1", "PYTHONPATH": "/x",
       "SECRET": "no", "OMP_NUM_THREADS": "1"}


def test_select_env_names_forwards_only_what_ranks_need():
    assert select_env_names(ENV) == ("HOROVOD_FUSION_THRESHOLD", "OMP_NUM_THREADS", "PATH", "PYTHONPATH")


def test_mpirun_argv_golden():
    root = build_plan(2, None, ("hvdtrain", "train", "--epochs", "1"), ENV, uid=0)
    user = build_plan(4, parse_host_list("node1:2,node2:2"), ("python", "my script.py"), ENV, uid=1000)
    text = "\n".join(shlex.join(build_mpirun_argv(plan)) for plan in (root, user)) + "\n"
    check_golden("mpirun_argv.txt", text)


def test_run_dry_run_prints_the_exact_command():
    done = hvdtrain("run", "-np", "2", "--dry-run", "--", "echo", "a b;c")
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    assert argv[:7] == ["mpirun", "-np", "2", "-H", "localhost:2", "--bind-to", "none"]
    assert argv[-2:] == ["echo", "a b;c"]
    assert argv[argv.index("--mca"):argv.index("--mca") + 3] == ["--mca", "mpi_yield_when_idle", "1"]


def test_plan_needs_a_command():
    with pytest.raises(HvdtrainError, match="no command"):
        build_plan(2, None, (), ENV, uid=0)
