import os
import subprocess

import pytest
from conftest import cli

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import Host
from hvdtrain.slurm.nodelist import (
    SlurmJob,
    expand_nodelist,
    expand_tasks_per_node,
    hosts_from_nodelist,
    hosts_from_slurm,
    slurm_job,
    to_hostnames,
)

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


# Slurm's documented hostlist forms (sbatch/srun/scontrol man pages and slurm.conf's examples),
# and the forms where python-hostlist alone differs from scontrol: spaces after commas, repeated
# names, three or more bracket groups. Each must expand name for name as the real scontrol does.
SLURM_FORMS = [
    "lx[10-20]", "lx[10,20]", "lx[15,18,32-33]", "linux[0-64,128]", "tux[0-2],tux5", "alpha,beta,gamma",
    "rack[0-3]_blade[0-2]", "dev[00-02]", "n[9-11]", "n[001-002,010]", "r[1-2]n[08-09]", "a1,b[2-3],c",
    "n1, n2", "n[1-2] , m1", "n1,,n2", "n1,n1", "n[1-2],n1", "n[1,1]", "n[1-2,2]", "n[2,1]",
    "a[1-2]b[1-2]c[1-2]", "x[1-2]y[3-4]z[5-6]w[7-8]", "a[1-2]-b[3-4]", "fe80::1", "node01.cluster.example.org",
]


# Slurm 22.05's scontrol rejects a suffix after the last bracket group ("gpu-a[1-2]-ib"), which
# python-hostlist accepts; every expression scontrol accepts must expand identically.
@pytest.mark.parametrize("expr", [*SLURM_FORMS, *(case[0] for case in EXPRESSIONS if "]-" not in case[0])])
def test_expansion_matches_real_scontrol(expr, scontrol_env):
    done = subprocess.run(["scontrol", "show", "hostnames", expr], capture_output=True, text=True,
                          env=scontrol_env, check=True)
    assert expand_nodelist(expr) == done.stdout.split()


def test_underscore_node_names_become_hosts_and_hostnames():
    hosts = hosts_from_nodelist("rack[0-1]_blade[0-1]", "2(x4)")
    assert [str(host) for host in hosts] == ["rack0_blade0:2", "rack0_blade1:2", "rack1_blade0:2", "rack1_blade1:2"]
    merged = to_hostnames(hosts, {"rack0_blade0": "node-a", "rack0_blade1": "node-a"})
    assert merged[0] == Host("node-a", 4) and len(merged) == 3


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
    with pytest.raises(HvdtrainError, match="host n1 is listed twice in nodelist 'n1,n1'"):
        hosts_from_slurm({}, "n1,n1")  # scontrol keeps repeats, and a host is one entry
    with pytest.raises(HvdtrainError, match="not a valid hostname"):
        hosts_from_slurm({}, "n1;touch")


def test_from_slurm_cli_reads_the_environment():
    env: dict[str, str | None] = {"SLURM_JOB_NODELIST": "node[01-02]", "SLURM_TASKS_PER_NODE": "2(x2)"}
    done = cli("hostfile", "from-slurm", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "node01 slots=2\nnode02 slots=2\n"
    done = cli("hostfile", "from-slurm", "--nodelist", "a[1-2]", "--tasks-per-node", "3", "--format", "horovod")
    assert done.stdout == "a1:3,a2:3\n"
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SLURM_")}
    done = cli("hostfile", "from-slurm", env=clean)
    assert done.returncode == 2 and "no Slurm allocation" in done.stderr


@pytest.mark.parametrize(("env", "job"), [
    ({}, None),
    ({"SLURM_JOB_ID": "7"}, None),  # a job id alone names no nodes
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}, SlurmJob("7", "n[1-2]", None)),
    ({"SLURM_JOBID": "8", "SLURM_NODELIST": "n1", "SLURM_TASKS_PER_NODE": "2"}, SlurmJob("8", "n1", "2")),
    ({"SLURM_JOB_NODELIST": "a1", "SLURM_NODELIST": "b1"}, SlurmJob("?", "a1", None)),
])
def test_slurm_job_is_the_one_answer_to_inside_slurm(env, job):
    assert slurm_job(env) == job


def test_run_uses_an_allocation_known_only_by_slurm_nodelist():
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SLURM_")}
    env.update(SLURM_NODELIST="n[1-2]", SLURM_TASKS_PER_NODE="2(x2)")
    done = cli("run", "-np", "4", "--launcher", "mpirun", "--dry-run", "--", "true", env=env)
    assert done.returncode == 0, done.stderr
    assert " -H n1:2,n2:2 " in done.stdout
