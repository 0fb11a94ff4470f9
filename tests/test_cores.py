"""Each rank's share of its node's cores: the pure split, the split near each GPU from fake sysfs trees,
binding real threads of this process, the thread count that follows, and the plan that asks ranks to bind."""

import json
import os
import sys
import threading

import pytest
from conftest import REPO, cli, hvdtrain

from hvdtrain.install.doctor import gpu_placement
from hvdtrain.job.cores import (
    BIND_VARIABLE,
    bind_process,
    bind_rank,
    core_share,
    format_cpu_list,
    numa_share,
    parse_cpu_list,
    pci_numa_node,
    read_cpus,
)
from hvdtrain.launch.plan import placement_settings
from hvdtrain.train.config import VisibleGpus, threads_for_rank


@pytest.mark.parametrize(("cores", "local_rank", "local_size", "share"), [
    (range(8), 0, 2, (0, 1, 2, 3)),
    (range(8), 1, 2, (4, 5, 6, 7)),
    ([5, 1, 3, 7], 1, 2, (5, 7)),  # lowest numbers first, whatever order the mask came in
    (range(7), 2, 3, (4, 5)),  # core 6 is left over: every rank gets the same count
    (range(2), 1, 2, (1,)),
    (range(2), 0, 3, ()),  # fewer cores than ranks: no binding
    (range(4), 4, 4, ()),  # a local rank outside the node's ranks
    (range(4), 0, 0, ()),
])
def test_core_share(cores, local_rank, local_size, share):
    assert core_share(list(cores), local_rank, local_size) == share


def test_the_shares_of_a_node_are_disjoint_and_equal():
    shares = [set(core_share(range(64), rank, 6)) for rank in range(6)]
    assert all(len(share) == 10 for share in shares)
    assert len(set().union(*shares)) == 60


def test_bind_process_binds_every_thread_and_later_threads_inherit():
    before = os.sched_getaffinity(0)
    target = {min(before)}
    ready, stop = threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}

    def existing() -> None:
        ready.set()
        stop.wait()
        seen["existing"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=existing)
    thread.start()
    ready.wait()
    try:
        bind_process(target)
        later = threading.Thread(target=lambda: seen.update(later=os.sched_getaffinity(0)))
        later.start()
        later.join()
        stop.set()
        thread.join()
        assert os.sched_getaffinity(0) == target
        assert seen == {"existing": target, "later": target}
    finally:
        stop.set()
        bind_process(before)


def test_bind_rank_only_when_asked():
    before = os.sched_getaffinity(0)
    try:
        assert bind_rank({}, 0, 1) == ()
        assert bind_rank({BIND_VARIABLE: "0"}, 0, 1) == ()
        assert os.sched_getaffinity(0) == before
        assert bind_rank({BIND_VARIABLE: "1"}, 0, len(before)) == (min(before),)
        assert os.sched_getaffinity(0) == {min(before)}
    finally:
        bind_process(before)


@pytest.mark.parametrize(("explicit", "bound", "expected"), [(3, (0, 1), 3), (None, (4, 5, 6), 3)])
def test_threads_follow_the_binding(explicit, bound, expected):
    assert threads_for_rank(explicit, bound, local_size=2) == expected


def test_threads_without_binding_split_the_usable_cores():
    assert threads_for_rank(None, (), local_size=1) == len(os.sched_getaffinity(0))


def test_hvdtrain_run_asks_ranks_to_bind_unless_the_user_chose():
    assert placement_settings({}) == (f"{BIND_VARIABLE}=1",)
    assert placement_settings({BIND_VARIABLE: "0"}) == ()  # the user's export reaches the ranks as it is
    done = cli("run", "-np", "2", "--dry-run", "--explain", "--", "true")
    (line,) = [line for line in done.stdout.splitlines() if f"-x {BIND_VARIABLE}=1" in line]
    assert "even share of its node's cores" in line


@pytest.mark.parametrize("bind", ["default", "0"])
def test_ranks_of_a_real_job_bind_to_disjoint_shares(tmp_path, bind):
    """2 real ranks under hvdtrain run: each process, all its threads, on its own half of the cores;
    with HVDTRAIN_BIND_CORES=0 exported, every thread keeps all of them."""
    env = {name: value for name, value in os.environ.items() if name != BIND_VARIABLE}
    if bind == "0":
        env[BIND_VARIABLE] = "0"
    done = hvdtrain("run", "-np", "2", "--output-dir", str(tmp_path / "runs"), "--", sys.executable,
                    str(REPO / "tests" / "cores_worker.py"), str(tmp_path), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [json.loads((tmp_path / f"cores.rank{rank}.json").read_text()) for rank in (0, 1)]
    cores = sorted(os.sched_getaffinity(0))
    for rank, report in enumerate(reports):
        expected = list(core_share(cores, rank, 2)) if bind == "default" else cores
        assert len(report["threads"]) > 1, report  # Horovod's background thread is among them
        assert all(mask == expected for mask in report["threads"].values()), report
        assert report["torch_threads"] == len(expected) // (1 if bind == "default" else 2)


def fake_sysfs(root, nodes, siblings, gpus):
    """A sysfs tree: ``nodes`` {node: cpus}, ``siblings`` the physical cores (tuples of logical CPUs),
    ``gpus`` {PCI bus id: numa_node as the kernel writes it}."""
    for node, cpus in nodes.items():
        (root / f"devices/system/node/node{node}").mkdir(parents=True)
        (root / f"devices/system/node/node{node}/cpulist").write_text(format_cpu_list(cpus) + "\n")
    for core in siblings:
        for cpu in core:
            (root / f"devices/system/cpu/cpu{cpu}/topology").mkdir(parents=True)
            (root / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").write_text(format_cpu_list(core))
    for bus_id, node in gpus.items():
        (root / "bus/pci/devices" / bus_id).mkdir(parents=True)
        (root / "bus/pci/devices" / bus_id / "numa_node").write_text(f"{node}\n")
    return root


# Two sockets of 16 cores with 2 threads each, Linux's numbering: socket 0 has CPUs 0-15 and their
# siblings 32-47. Eight GPUs, four behind each socket, the bus ids as nvidia-smi writes them.
TWO_SOCKETS = {"nodes": {0: [*range(0, 16), *range(32, 48)], 1: [*range(16, 32), *range(48, 64)]},
               "siblings": [(cpu, cpu + 32) for cpu in range(32)],
               "gpus": {f"0000:{bus:02x}:00.0": 0 if gpu < 4 else 1
                        for gpu, bus in enumerate((0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb))}}


def test_two_socket_eight_gpu_node_gives_each_rank_whole_cores_on_its_gpus_socket(tmp_path):
    sysfs = fake_sysfs(tmp_path, **TWO_SOCKETS)
    cpus = read_cpus(range(64), sysfs)
    nodes = [pci_numa_node(f"00000000:{bus_id[5:]}".upper(), sysfs) for bus_id in TWO_SOCKETS["gpus"]]
    assert nodes == [0, 0, 0, 0, 1, 1, 1, 1]
    shares = [numa_share(cpus, nodes, rank) for rank in range(8)]
    assert [format_cpu_list(share) for share in shares] == [
        "0-3,32-35", "4-7,36-39", "8-11,40-43", "12-15,44-47",
        "16-19,48-51", "20-23,52-55", "24-27,56-59", "28-31,60-63"]
    assert all(set(share) <= set(TWO_SOCKETS["nodes"][nodes[rank]]) for rank, share in enumerate(shares))
    physical = [{cpu % 32 for cpu in share} for share in shares]  # no two ranks on one physical core
    assert sum(map(len, physical)) == len(set().union(*physical)) == 32


def test_gpus_alternating_between_sockets_take_their_own_sockets_cores(tmp_path):
    sysfs = fake_sysfs(tmp_path, **TWO_SOCKETS)
    shares = [numa_share(read_cpus(range(64), sysfs), [0, 1, 0, 1], rank) for rank in range(4)]
    assert [format_cpu_list(share) for share in shares] == ["0-7,32-39", "16-23,48-55", "8-15,40-47",
                                                            "24-31,56-63"]


def test_a_cpuset_limits_the_share_to_the_usable_cores(tmp_path):
    """Slurm gave the job half of each socket: the ranks split what they may use, near their GPU."""
    sysfs = fake_sysfs(tmp_path, **TWO_SOCKETS)
    usable = [*range(0, 8), *range(32, 40), *range(16, 24), *range(48, 56)]
    shares = [numa_share(read_cpus(usable, sysfs), [0, 0, 1, 1], rank) for rank in range(4)]
    assert [format_cpu_list(share) for share in shares] == ["0-3,32-35", "4-7,36-39", "16-19,48-51",
                                                            "20-23,52-55"]


@pytest.mark.parametrize("numa_node", ["0", "-1"])  # -1: the kernel does not know (one socket, often)
def test_one_socket_four_gpu_node(tmp_path, numa_node):
    sysfs = fake_sysfs(tmp_path, {0: range(16)}, [(cpu, cpu + 8) for cpu in range(8)],
                       {f"0000:{bus:02x}:00.0": numa_node for bus in (1, 2, 3, 4)})
    nodes = [pci_numa_node(bus_id, sysfs) for bus_id in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0",
                                                         "0000:04:00.0")]
    shares = [format_cpu_list(numa_share(read_cpus(range(16), sysfs), nodes, rank)) for rank in range(4)]
    if numa_node == "0":  # whole physical cores, each with its sibling thread
        assert shares == ["0-1,8-9", "2-3,10-11", "4-5,12-13", "6-7,14-15"]
    else:  # no NUMA information: today's even split of the CPU ids
        assert nodes == [None] * 4 and shares == ["0-3", "4-7", "8-11", "12-15"]


def test_fewer_cores_than_ranks(tmp_path):
    """Two physical cores of two threads for four ranks: one thread each; three threads: no binding."""
    sysfs = fake_sysfs(tmp_path, {0: range(4)}, [(0, 2), (1, 3)], {})
    assert [numa_share(read_cpus(range(4), sysfs), [0] * 4, rank) for rank in range(4)] == [(0,), (1,), (2,), (3,)]
    assert [numa_share(read_cpus(range(3), sysfs), [0] * 4, rank) for rank in range(4)] == [()] * 4


def test_no_gpu_or_an_unknown_node_falls_back_to_the_even_split(tmp_path):
    sysfs = fake_sysfs(tmp_path, **TWO_SOCKETS)
    cpus = read_cpus(range(64), sysfs)
    assert numa_share(cpus, [0, None], 1) == core_share(range(64), 1, 2)
    bare = read_cpus(range(8), tmp_path / "no-sysfs")
    assert all(cpu.node is None and cpu.siblings == (cpu.id,) for cpu in bare)


@pytest.mark.parametrize(("bus_id", "node"), [
    ("0000:18:00.0", 0), ("00000000:9A:00.0", 1), ("9a:00.0", 1),
    ("0000:77:00.0", None),  # no such device
    ("../../../etc/passwd", None), ("0000:18:00.0/../..", None)])
def test_pci_numa_node(tmp_path, bus_id, node):
    assert pci_numa_node(bus_id, fake_sysfs(tmp_path, **TWO_SOCKETS)) == node


def test_cpu_lists_round_trip():
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpu_list([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert format_cpu_list([]) == "-" and parse_cpu_list("") == []


def test_doctor_shows_each_local_ranks_gpu_and_cores(tmp_path):
    sysfs = fake_sysfs(tmp_path, **TWO_SOCKETS)
    lines = gpu_placement(VisibleGpus(8), [0, 0, 0, 0, 1, 1, 1, 1], read_cpus(range(64), sysfs))
    assert lines[0] == "local rank 0: cuda:0, NUMA node 0, cores 0-3,32-35"
    assert lines[7] == "local rank 7: cuda:7, NUMA node 1, cores 28-31,60-63"
    assert gpu_placement(VisibleGpus(1, bound_per_task=True), [None], read_cpus(range(4), sysfs)) == [
        "local rank 0: cuda:0, NUMA node unknown, cores 0-3"]
