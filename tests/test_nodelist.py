import os
import subprocess

import pytest
from conftest import hvdtrain

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts import Host
from hvdtrain.slurm.nodelist import expand_nodelist, expand_tasks_per_node, hosts_from_slurm

EXPRESSIONS = [
    ("node01", ["node01"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("gpu-a[1-2]-ib", ["gpu-a1-ib", "gpu-a2-ib"]),
    ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
    ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("n[001-002,010]", ["n001", "n002", "n010"]),
]


@pytest.mark.parametrize(("expr", "names"), EXPRESSIONS)
def test_expand_nodelist(expr, names):
    assert expand_nodelist(expr) == names


@pytest.fixture(scope="module")
def scontrol_env(tmp_path_factory):
    """scontrol reads a slurm.conf even to expand hostlists; a minimal one is enough."""
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    conf.write_text("ClusterName=hvdtrain\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\n"
                    "PartitionName=p Nodes=localhost\n")
    return {**os.environ, "SLURM_CONF": str(conf)}


# Slurm 22.05's scontrol rejects a suffix after a bracket group ("gpu-a[1-2]-ib"), which
# python-hostlist accepts; every expression scontrol accepts must expand identically.
@pytest.mark.parametrize(("expr", "names"), [case for case in EXPRESSIONS if "]-" not in case[0]])
def test_expansion_matches_real_scontrol(expr, names, scontrol_env):
    done = subprocess.run(["scontrol", "show", "hostnames", expr], capture_output=True, text=True,
                          env=scontrol_env, check=True)
    assert done.stdout.split() == names == expand_nodelist(expr)


@pytest.mark.parametrize(("spec", "counts"), [
    ("4", [4]), ("2(x3),1", [2, 2, 2, 1]), ("1,2,3", [1, 2, 3]), ("8(x2),4(x1)", [8, 8, 4]),
])
def test_expand_tasks_per_node(spec, counts):
    assert expand_tasks_per_node(spec) == counts


@pytest.mark.parametrize(("expr", "message"), [
    ("node[01-", "bad Slurm nodelist"), ("node[3-1]", "bad Slurm nodelist"), ("", "names no node"),
])
def test_bad_nodelists(expr, message):
    with pytest.raises(HvdtrainError, match=message):
        expand_nodelist(expr)


@pytest.mark.parametrize("spec", ["2(x", "x", "0", "2(x0)"])
def test_bad_tasks_per_node(spec):
    with pytest.raises(HvdtrainError, match="tasks-per-node spec"):
        expand_tasks_per_node(spec)


@pytest.mark.parametrize(("env", "hosts"), [
    ({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2),1"},
     (Host("n1", 2), Host("n2", 2), Host("n3", 1))),
    ({"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_TASKS_PER_NODE": "4"}, (Host("n1", 4), Host("n2", 4))),
    ({"SLURM_NODELIST": "n1"}, (Host("n1", 1),)),
])
def test_hosts_from_slurm_environment(env, hosts):
    assert hosts_from_slurm(env) == hosts


def test_hosts_from_slurm_errors():
    with pytest.raises(HvdtrainError, match="no Slurm allocation"):
        hosts_from_slurm({})
    with pytest.raises(HvdtrainError, match="3 nodes in 'n\\[1-3\\]' but 2 task counts"):
        hosts_from_slurm({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "1,2"})
    assert hosts_from_slurm({}, "n1,n1") == (Host("n1", 1),)  # python-hostlist drops repeats
    with pytest.raises(HvdtrainError, match="not a valid hostname"):
        hosts_from_slurm({}, "n1;touch")


def test_from_slurm_cli_reads_the_environment():
    env = {**os.environ, "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_TASKS_PER_NODE": "2(x2)"}
    done = hvdtrain("hostfile", "from-slurm", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "node01 slots=2\nnode02 slots=2\n"
    done = hvdtrain("hostfile", "from-slurm", "--nodelist", "a[1-2]", "--tasks-per-node", "3", "--format", "horovod")
    assert done.stdout == "a1:3,a2:3\n"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = hvdtrain("hostfile", "from-slurm", env=clean)
    assert done.returncode == 2 and "no Slurm allocation" in done.stderr
