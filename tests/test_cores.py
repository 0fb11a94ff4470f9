"""Each rank's share of its node's cores: the pure split, binding real threads of this process, the
thread count that follows, and the plan that asks ranks to bind."""

import json
import os
import sys
import threading

import pytest
from conftest import REPO, cli, hvdtrain

from hvdtrain.job.cores import BIND_VARIABLE, bind_process, bind_rank, core_share
from hvdtrain.launch.plan import placement_settings
from hvdtrain.train.config import threads_for_rank


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
