from pathlib import Path

import pytest

from hvdtrain.job.failure import RankReport, build_failure, classify_returncode, extract_traceback, parse_missing_ranks
from hvdtrain.job.paths import RunPaths
from hvdtrain.job.ranks import launched_by_launcher, rank_from_env, size_from_env

STALL_LOG = """\
[2026-11-22 07:40:01.000: W horovod/common/stall_inspector.cc:107] One or more tensors were submitted to be \
reduced, gathered or broadcasted by subset of ranks and are waiting for remainder of ranks for more than 5 \
seconds. This may indicate that different ranks are trying to submit different tensors or that only subset \
of ranks is submitting tensors, which will cause deadlock.
Missing ranks:
1!: [allreduce.net.1.bias, allreduce.net.1.weight]
3: [allreduce.fc.weight]
One or more rank (marked by "!") is stalled for longer than 10 seconds. Will shutdown.
""".splitlines()


def test_parse_missing_ranks():
    assert parse_missing_ranks(STALL_LOG) == {1: ["allreduce.net.1.bias", "allreduce.net.1.weight"],
                                              3: ["allreduce.fc.weight"]}
    assert parse_missing_ranks(["1: [not after a heading]"]) == {}


def test_extract_traceback_takes_the_last_one():
    lines = ["epoch 1", "Traceback (most recent call last):", '  File "a.py", line 1, in <module>',
             "ValueError: first", "retrying", "Traceback (most recent call last):",
             '  File "b.py", line 2, in f', "    g()", "RuntimeError: second", "after"]
    assert extract_traceback(lines) == lines[5:9]
    assert extract_traceback(["no trace here"]) == []


@pytest.mark.parametrize(("returncode", "expected"), [(0, (0, None)), (1, (1, None)), (-9, (137, "SIGKILL")),
                                                      (-15, (143, "SIGTERM"))])
def test_classify_returncode(returncode, expected):
    assert classify_returncode(returncode) == expected


@pytest.mark.parametrize(("env", "rank"), [({}, 0), ({"OMPI_COMM_WORLD_RANK": "3"}, 3), ({"PMIX_RANK": "2"}, 2),
                                           ({"HOROVOD_RANK": "1", "SLURM_PROCID": "5"}, 1), ({"SLURM_PROCID": "5"}, 5),
                                           ({"OMPI_COMM_WORLD_RANK": "²"}, 0)])
def test_rank_from_env(env, rank):
    assert rank_from_env(env) == rank


@pytest.mark.parametrize(("env", "size"), [
    ({}, 1), ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"}, 4), ({"PMI_RANK": "0", "PMI_SIZE": "3"}, 3),
    ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, 2),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, 8)])
def test_size_from_env(env, size):
    assert size_from_env(env) == size


def test_size_comes_from_the_launcher_that_gave_the_rank():
    # Inside sbatch, SLURM_NTASKS is the whole job's; mpirun's own size wins with mpirun's rank.
    assert size_from_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_NTASKS": "8"}) == 2


@pytest.mark.parametrize(("env", "joins"), [({}, False), ({"SLURM_PROCID": "0"}, False),
                                            ({"OMPI_COMM_WORLD_RANK": "0"}, True), ({"PMIX_RANK": "1"}, True),
                                            ({"HOROVOD_RANK": "0"}, True), ({"PMI_RANK": "0"}, True)])
def test_launched_by_launcher(env, joins):
    assert launched_by_launcher(env) is joins


def test_run_paths():
    paths = RunPaths.new({}, Path("/home/u"), "20261122-070000", 42, "9f3a")
    assert paths.root == Path("/home/u/hvdtrain-runs/run-20261122-070000-42-9f3a") and paths.fresh
    assert RunPaths.new({"HVDTRAIN_RUNS_DIR": "/scratch/r"}, Path("/x"), "s", 1, "ab").root == Path(
        "/scratch/r/run-s-1-ab")
    assert paths.restart(2).root == Path("/home/u/hvdtrain-runs/run-20261122-070000-42-9f3a-restart2")
    assert (paths.log(3).name, paths.report(3).name, paths.progress(3).name, paths.failure.name) == (
        "rank-3.log", "rank-3.json", "rank-3.progress", "failure.json")


def _report(rank, code=None, sig=None, ended=None, running=False):
    return RankReport(rank=rank, host=f"n{rank}", pid=100 + rank, log=f"/r/rank-{rank}.log", running=running,
                      exit_code=code, signal=sig, ended_at=ended, last_lines=["x"], traceback=[])


def test_the_first_rank_to_fail_is_the_root_cause():
    reports = [_report(0, 143, "SIGTERM", ended=12.0), _report(1, 137, "SIGKILL", ended=10.0), _report(2, 0, ended=9)]
    failure = build_failure(reports, 4, 137, {})
    assert failure["root_cause"]["rank"] == 1
    assert failure["cause"] == "rank 1 on n1 (pid 101) was killed by signal SIGKILL"
    assert failure["silent_ranks"] == [3] and failure["stalled"] == []


def test_stalled_ranks_come_first_in_the_cause():
    reports = [_report(0, 1, ended=20.0), _report(1, running=True)]
    failure = build_failure(reports, 2, 1, {1: ["allreduce.w"]})
    assert failure["cause"] == "stalled: rank(s) 1 never reached a collective"
    assert failure["stalled"] == [{"rank": 1, "host": "n1", "waiting_for": ["allreduce.w"], "last_progress": None}]
    assert failure["silent_ranks"] == [1]
