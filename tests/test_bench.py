"""Benchmarks: correct definitions and valid outputs (never speed)."""

import json
import struct
import sys

import pytest
from conftest import REPO, hvdtrain

from hvdtrain.bench import allreduce_worker
from hvdtrain.bench.allreduce import bandwidths, build_report, combine_rounds, fit_alpha_beta, parse_sizes, render_csv
from hvdtrain.bench.allreduce_worker import PAIRED_BLOCKS, time_paired, time_size
from hvdtrain.bench.model import predict, ring_allreduce_seconds
from hvdtrain.bench.training import CONFIGS, build_argv, lockstep_ceiling, summarize
from hvdtrain.errors import HvdtrainError


@pytest.mark.parametrize(("text", "sizes"), [("4K,1M", [4096, 1048576]), ("64", [64]), ("2G", [2 * 2**30]),
                                             ("16MB, 8k", [16 * 2**20, 8192])])
def test_parse_sizes(text, sizes):
    assert parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", "0", "4X", "1.5M", "K"])
def test_parse_sizes_rejects(text):
    with pytest.raises(HvdtrainError, match="bad message size"):
        parse_sizes(text)


def test_bandwidth_definitions_follow_nccl_tests():
    algbw, busbw = bandwidths(nbytes=10**9, time_us=1e6, world_size=4)  # 1 GB in 1 s over 4 ranks
    assert algbw == pytest.approx(1.0) and busbw == pytest.approx(1.5)  # 2(n-1)/n = 1.5


def test_fit_recovers_alpha_and_beta():
    points = [(size, 50.0 + size / 2e9 * 1e6) for size in (4096, 65536, 2**20, 2**24)]  # 50 us, 2 GB/s
    fit = fit_alpha_beta(points)
    assert fit["alpha_us"] == pytest.approx(50.0, rel=1e-6) and fit["beta_gbps"] == pytest.approx(2.0, rel=1e-6)


class _Unreduced:
    """A backend that forgets to reduce: rank 0 of 2 keeps its own 1s where the sum is 3."""

    name, rank, size = "stub", 0, 2

    def expected(self):
        return 3.0

    def barrier(self):
        pass

    def allreduce(self, tensor):
        return [tensor]

    def max_over_ranks(self, seconds):
        return seconds


def test_allreduce_results_are_checked():
    with pytest.raises(RuntimeError, match="wrong all-reduce result at 4096 bytes"):
        time_size(_Unreduced(), 4096)
    reduced = _Unreduced()
    reduced.allreduce = lambda tensor: [tensor * 3]
    assert time_size(reduced, 4096) > 0


class _Timed(_Unreduced):
    """Reduces correctly; each all-reduce advances ``clock`` by ``seconds`` and is logged."""

    def __init__(self, name, seconds, clock, log):
        self.name, self.seconds, self.clock, self.log = name, seconds, clock, log

    def allreduce(self, tensor):
        self.log.append(self.name)
        self.clock[0] += self.seconds
        return [tensor * 3]


def test_paired_alternates_blocks_and_reports_each_side(monkeypatch):
    clock, log = [0.0], []
    monkeypatch.setattr(allreduce_worker.time, "perf_counter", lambda: clock[0])
    horovod, mpi = _Timed("horovod_sum", 0.004, clock, log), _Timed("mpi", 0.001, clock, log)
    assert time_paired(horovod, mpi, 2**24, pause_s=0.0, warmup=1) == pytest.approx((0.004, 0.001))
    blocks = [name for index, name in enumerate(log) if index == 0 or log[index - 1] != name]
    assert blocks == ["horovod_sum", "mpi"] * PAIRED_BLOCKS  # one block of each in turn
    assert len(log) == 2 * PAIRED_BLOCKS * (1 + 3)  # 16 MiB: 1 warm-up and the minimum of 3 per block


def test_rounds_combine_to_the_median_in_first_round_order():
    rounds = [[{"backend": "mpi", "bytes": 4, "time_us": t}, {"backend": "gloo", "bytes": 4, "time_us": 9.0}]
              for t in (5.0, 1.0, 3.0)]
    assert combine_rounds(rounds) == [{"backend": "mpi", "bytes": 4, "time_us": 3.0},
                                      {"backend": "gloo", "bytes": 4, "time_us": 9.0}]


def test_report_and_csv_fields():
    report = build_report(2, [{"backend": "mpi", "bytes": 1000, "time_us": 10.0},
                              {"backend": "mpi", "bytes": 100000, "time_us": 100.0}])
    assert set(report) == {"world_size", "rounds", "results", "fit"} and set(report["fit"]) == {"mpi"}
    assert set(report["results"][0]) == {"backend", "bytes", "time_us", "algbw_gbps", "busbw_gbps"}
    assert render_csv(report).splitlines()[0] == "backend,bytes,time_us,algbw_gbps,busbw_gbps"


def test_lockstep_ceiling_pairs_steps_and_waits_for_the_slowest_rank():
    # independent: rank 0 makes 2 steps in 2 s, rank 1 in 4 s: 1 + 0.5 = 1.5 steps/s. Lockstep: step 1
    # takes 1 s, step 2 the slower rank's 3 s: 2 ranks x 2 steps in 4 s = 1 step/s. 1 / 1.5 = 2/3.
    assert lockstep_ceiling([[1.0, 1.0], [1.0, 3.0]]) == pytest.approx(2 / 3)
    assert lockstep_ceiling([[2.0, 1.0], [1.0, 2.0]]) == pytest.approx(0.75)  # each rank slow once
    assert lockstep_ceiling([[1.0, 1.0, 9.0], [1.0, 1.0]]) == pytest.approx(1.0)  # unpaired steps left out
    assert lockstep_ceiling([[0.5] * 4, [0.5] * 4]) == pytest.approx(1.0)


def test_every_configuration_steps_the_same_optimizer(tmp_path):
    """hvdtrain scales its LR by the world size by default, and the LR changes a step's speed: every
    configuration gets the same LR and momentum, unscaled."""
    def option(argv, name):
        return argv[argv.index(name) + 1]

    for workload in ("resnet", "deep_narrow"):
        argvs = {config: build_argv(config, workload, 2, tmp_path, 32) for config in CONFIGS}
        assert {(option(a, "--lr"), option(a, "--momentum")) for a in argvs.values()} == {("0.01", "0.9")}
        assert all(("--no-lr-scaling" in argv) == config.startswith("hvdtrain") for config, argv in argvs.items())
        # Only the per-tensor configuration leaves the default gradient buckets.
        assert [c for c, argv in argvs.items() if "--bucket-mb" in argv] == ["hvdtrain_per_tensor"]
        assert option(argvs["hvdtrain_per_tensor"], "--bucket-mb") == "0"
        # Every hvdtrain configuration sets both switches of our patches, whatever the environment says.
        modes = {c: (option(a, "--horovod-wait"), option(a, "--horovod-allreduce"))
                 for c, a in argvs.items() if c.startswith("hvdtrain")}
        assert modes == {"hvdtrain": ("sleep", "shm"), "hvdtrain_upstream": ("spin", "mpi"),
                         "hvdtrain_mpi": ("sleep", "mpi"), "hvdtrain_per_tensor": ("sleep", "shm"),
                         "hvdtrain_np1": ("sleep", "shm")}


def test_ratios_pair_the_configurations_of_each_round():
    # Round 2 ran at half speed for every configuration; each ratio is taken within a round first.
    samples = {"hvdtrain": [900.0, 450.0, 1000.0], "hvdtrain_upstream": [900.0, 500.0, 1000.0],
               "hvdtrain_mpi": [450.0, 225.0, 400.0],
               "hvdtrain_per_tensor": [600.0, 300.0, 800.0],
               "ddp": [750.0, 375.0, 800.0], "independent": [1000.0, 500.0, 1111.0],
               "plain": [600.0, 300.0, 600.0], "hvdtrain_np1": [600.0, 330.0, 540.0]}
    report = summarize(samples, ceilings=[0.9, 1.0, 0.95])
    assert report["configs"]["independent"] == {"samples_per_sec": 1000.0, "spread": 305.5}
    ratios = report["ratios"]
    assert ratios["efficiency"] == pytest.approx(0.9)
    assert ratios["vs_ddp"] == pytest.approx(1.2) and ratios["vs_upstream"] == pytest.approx(1.0)
    assert ratios["vs_mpi"] == pytest.approx(2.0)
    assert ratios["overhead_np1"] == pytest.approx(1.0) and ratios["vs_per_tensor"] == pytest.approx(1.5)
    assert ratios["lockstep_ceiling"] == pytest.approx(0.95)
    assert ratios["of_ceiling"] == pytest.approx(0.9 / 0.95, rel=1e-3)  # rounds: 1.0, 0.9, 0.947


def test_model_matches_hand_computed_values():
    # 100 MB over 4 workers at 10 GB/s, 5 us: 2*3*5us + 2*3/4 * 0.1 s / 10 = 30 us + 15 ms.
    assert ring_allreduce_seconds(1e8, 4, 10.0, 5.0) == pytest.approx(0.01503)
    p = predict(params=25e6, step_s=0.1, nodes=4, bandwidth_gbps=10.0, latency_us=5.0)
    assert p.efficiency_no_overlap == pytest.approx(0.1 / 0.11503)
    assert p.efficiency_full_overlap == 1.0
    assert predict(25e6, 0.1, 1, 10.0, 5.0).comm_s == 0.0


def test_allreduce_bench_writes_valid_outputs(tmp_path):
    out = tmp_path / "bench"
    done = hvdtrain("bench", "allreduce", "-np", "2", "--sizes", "4K,64K", "--rounds", "2", "--out", str(out),
                    timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "allreduce.json").read_text())
    assert report["world_size"] == 2 and report["rounds"] == 2
    assert set(report["fit"]) == {"horovod_sum", "horovod_upstream", "horovod_mpi", "horovod_avg", "horovod_grouped",
                                  "mpi", "gloo", "paired_horovod", "paired_mpi"}
    assert len(report["results"]) == 18 and all(row["time_us"] > 0 for row in report["results"])
    assert len((out / "allreduce.csv").read_text().splitlines()) == 19
    png = (out / "allreduce.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1200, 450)
    assert "all-reduce, 2 ranks" in done.stdout and "paired (one job)" in done.stdout


def test_model_command_labels_itself_a_model():
    done = hvdtrain("bench", "model", "--params", "44.5e6", "--step-time", "0.49", "--bandwidth", "3.125",
                    "--latency", "25", "--nodes", "128")
    assert done.returncode == 0 and done.stdout.startswith("MODEL")
    assert done.stdout.splitlines()[-1].split() == ["128", "0.1194", "0.804", "1.000"]


def test_make_bench_exists_and_is_not_part_of_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert "\nbench:" in makefile
    test_target = makefile.split("\ntest:")[1].split("\n\n")[0]
    assert "bench" not in test_target


def test_train_bench_measures_every_configuration(tmp_path):
    out = tmp_path / "bench"
    timeline = tmp_path / "timeline.json"
    done = hvdtrain("bench", "train", "-np", "2", "--models", "deep_narrow", "--rounds", "1", "--timeline",
                    str(timeline), "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "train.json").read_text())
    model = report["models"]["deep_narrow"]
    assert report["world_size"] == 2 and set(model["configs"]) == {
        "hvdtrain", "hvdtrain_upstream", "hvdtrain_mpi", "hvdtrain_per_tensor", "ddp", "independent", "plain",
        "hvdtrain_np1"}
    assert all(c["samples_per_sec"] > 0 and c["spread"] == 0 for c in model["configs"].values())
    assert set(model["ratios"]) == {"vs_ddp", "vs_upstream", "vs_mpi", "vs_per_tensor", "efficiency",
                                    "lockstep_ceiling", "of_ceiling", "overhead_np1"}
    assert 0.3 < model["ratios"]["lockstep_ceiling"] <= 1.0  # from the independent ranks' own step times
    assert model["ratios"]["vs_ddp"] == pytest.approx(  # one round: its ratio is the medians' ratio
        model["configs"]["hvdtrain"]["samples_per_sec"] / model["configs"]["ddp"]["samples_per_sec"])
    assert model["ratios"]["of_ceiling"] == pytest.approx(
        model["ratios"]["efficiency"] / model["ratios"]["lockstep_ceiling"])
    assert (out / "train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trace = timeline.read_text()  # Horovod's timeline: a chrome://tracing JSON array of events
    assert trace.startswith("[") and "ALLREDUCE" in trace


def test_idle_job_sleeps_instead_of_spinning(tmp_path):
    """The patched Horovod with the default wait: a 2-rank job that only sleeps uses well under half a core
    per rank (upstream's busy waiting used 35-95% here); the spin mode on the same binary is measured beside it."""
    done = hvdtrain("bench", "idle", "-np", "2", "--seconds", "3", "--rounds", "1", "--out", str(tmp_path),
                    timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "idle.json").read_text())
    sleep, spin = report["cpu_fraction"]["sleep"], report["cpu_fraction"]["spin"]
    assert len(sleep) == len(spin) == 2
    assert max(sleep) < 0.2, report
    assert min(spin) > max(sleep), report  # the switch really reaches the binary


def cycle_seconds(tmp_path, cycle_ms: int, *mode: str) -> dict[str, list[float]]:
    """tests/cycle_worker.py under each wait, the same binary: each rank's seconds inside its
    all-reduces, every sum checked."""
    seconds = {}
    for wait in ("sleep", "spin"):
        out = tmp_path / wait
        done = hvdtrain("run", "-np", "2", "--cycle-time-ms", str(cycle_ms), "--horovod-wait", wait,
                        "--output-dir", str(out / "runs"), "--", sys.executable,
                        str(REPO / "tests" / "cycle_worker.py"), str(out), *mode, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        reports = [json.loads((out / f"cycle.rank{rank}.json").read_text()) for rank in (0, 1)]
        assert all(report["checked"] == 20 for report in reports), reports  # every sum was right
        seconds[wait] = [report["seconds"] for report in reports]
    return seconds


def test_waiting_for_a_result_ends_the_batching_window(tmp_path):
    """20 synchronous all-reduces under a 200 ms cycle, once with our wait and once with upstream's
    (spin, the same binary), side by side. With ours each starts as soon as the training thread waits
    for it; with upstream's each waits out a cycle. The ratio was about 400 here; the bound is 10, so
    this tells which behaviour ran, not how fast the machine is."""
    seconds = cycle_seconds(tmp_path, 200)
    # a ratio of the two runs, not a time: it only asks which behaviour each mode ran
    slowdown_with_upstream_wait = max(seconds["spin"]) / max(seconds["sleep"])
    assert slowdown_with_upstream_wait > 10, seconds


def test_a_round_without_the_tensor_does_not_put_the_waiting_rank_back_to_sleep(tmp_path):
    """Rank 0 asks first; the other rank's idle background thread joins that round with nothing queued,
    so it ends without the tensor (tests/cycle_worker.py, late). Rank 0's thread must go on at once,
    since its training thread still waits. Here the late rank waited about 1 ms per all-reduce with our
    wait, 30 ms when a waiting thread only ended one window (a ratio to spin of 2.6), and 80 ms with
    upstream's; the bound of 10 tells the three apart."""
    seconds = cycle_seconds(tmp_path, 100, "late")
    late_rank = 1  # rank 0 waits for it either way
    slowdown_with_upstream_wait = seconds["spin"][late_rank] / seconds["sleep"][late_rank]  # two runs' ratio
    assert slowdown_with_upstream_wait > 10, seconds
