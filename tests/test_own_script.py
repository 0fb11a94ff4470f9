"""``hvdtrain.Run`` in an own training script (tests/own_worker.py), on 2 real ranks: preemption at a
random step resumes bit-identical, a late signal never fails a finished run, a killed rank restarts
with --max-restarts, and the metrics land in TensorBoard and MLflow as one run with every step once.
The same for a legacy Horovod script that only adds ``hvdtrain.Run``."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HVDTRAIN

from hvdtrain.job.signals import PREEMPTED_EXIT

pytestmark = pytest.mark.mpi

WORKER = str(Path(__file__).parent / "own_worker.py")
TRACKERS = {"HVDTRAIN_TRACKERS": "tensorboard,mlflow"}


def _argv(run_dir, output_dir, mode, *extra):
    return [HVDTRAIN, "run", "-np", "2", "--output-dir", str(output_dir), *extra, "--", sys.executable, WORKER,
            str(run_dir), *(["--horovod"] if mode == "horovod" else [])]


def _start(argv, env=None):
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _finish(job, timeout=240):
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    finally:
        job.kill()
    return job.returncode, stdout, stderr


def _wait_for(path, job, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert job.poll() is None and time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _batches_done(progress, per_epoch=56):
    """Batches rank 0 has done, from its progress file (epoch under way, batches of it done)."""
    try:
        epoch, batch = map(int, progress.read_text().split())
    except (OSError, ValueError):
        return 0
    return (epoch - 1) * per_epoch + batch


def _digest(stdout):
    found = re.findall(r"^digest (\w+) best ([\d.]+)$", stdout, re.M)
    assert len(found) == 1, stdout[-2000:]
    return found[0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Each mode's run, never stopped: its digest and its metrics."""
    results = {}
    for mode in ("api", "horovod"):
        base = tmp_path_factory.mktemp(f"straight-{mode}")
        code, stdout, stderr = _finish(_start(_argv(base / "run", base / "logs", mode), TRACKERS))
        assert code == 0, stdout[-2000:] + stderr[-2000:]
        results[mode] = (_digest(stdout), _records(base / "run"))
    return results


def _records(run_dir):
    """metrics.jsonl without the timings: what a resumed run must reproduce exactly."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in line.items() if key != "samples_per_sec"} for line in lines]


@pytest.mark.parametrize(("mode", "name"), [("api", "USR1"), ("api", "USR2"), ("horovod", "USR1")])
def test_a_signal_at_a_random_step_saves_it_and_the_rerun_ends_bit_identical(mode, name, tmp_path, straight):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    env = {**TRACKERS, "HVDTRAIN_PREEMPT_SIGNAL": name}  # as the sbatch templates set it
    job = _start(_argv(run_dir, logs, mode), env)
    target = random.randrange(5, 400)  # of 8 x 56 batches
    while _batches_done(logs / "rank-0.progress") < target:
        assert job.poll() is None, "the job ended before the signal"
        time.sleep(0.02)
    job.send_signal(signal.Signals[f"SIG{name}"])
    code, stdout, stderr = _finish(job)
    assert code == PREEMPTED_EXIT, f"signal after batch {target}\n{stdout[-2000:]}{stderr[-2000:]}"
    saved = re.search(rf"stopping on {name}/TERM: saved (\S+);", stdout)
    assert saved, stdout[-2000:]
    assert "Traceback" not in stderr
    reports = [json.loads((logs / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["exit_code"] for report in reports] == [PREEMPTED_EXIT] * 2  # no rank was killed

    code, stdout, stderr = _finish(_start(_argv(run_dir, tmp_path / "logs2", mode), env))
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    assert f"resuming from {saved.group(1)}" in stdout
    digest, records = straight[mode]
    assert _digest(stdout) == digest
    assert _records(run_dir) == records  # every record once, with the values of the run never stopped
    _check_trackers(run_dir, records)


def _check_trackers(run_dir, records):
    """TensorBoard's and MLflow's own readers see one run, every step once, the values of metrics.jsonl."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = [(record["step"], record["loss"]) for record in records if "loss" in record]
    (tb_dir,) = (run_dir / "tensorboard").iterdir()  # one run
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    assert [(event.step, pytest.approx(event.value)) for event in events.Scalars("loss")] == losses
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("hvdtrain").experiment_id])
    assert run.info.status == "FINISHED"
    history = sorted((metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, "loss"))
    assert history == [(step, pytest.approx(value)) for step, value in losses]


@pytest.mark.parametrize("place", ["evaluate", "summary", "teardown"])
def test_a_signal_after_the_last_step_leaves_the_run_finished(place, tmp_path, straight):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    run_dir.mkdir()
    job = _start(_argv(run_dir, logs, "api"), {"HOLD_AT": place})
    _wait_for(run_dir / "held", job, timeout=180)  # rank 0 waits at that place for the test
    job.send_signal(signal.SIGUSR1)
    time.sleep(1)  # the signal makes its way through mpirun and the supervisors while the rank waits
    (run_dir / "go").touch()
    code, stdout, stderr = _finish(job)
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    if place != "teardown":  # at teardown the digest was printed before the hold
        assert _digest(stdout) == straight["api"][0]
    newest = sorted(path.name for path in run_dir.glob("ckpt-*.pt"))[-1]
    assert re.fullmatch(r"ckpt-[0-9a-f]{8}-epoch00008\.pt", newest)  # the finished run's, not a step's


@pytest.mark.parametrize("restarts", [1, 0])
def test_a_killed_rank_restarts_the_job_which_resumes(restarts, tmp_path, straight):
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    job = _start(_argv(run_dir, logs, "api", "--max-restarts", str(restarts)))
    deadline = time.monotonic() + 120
    while not list(run_dir.glob("ckpt-*-epoch00001.pt")):  # one epoch is saved
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    os.kill(json.loads((logs / "rank-1.json").read_text())["pid"], signal.SIGKILL)
    code, stdout, stderr = _finish(job)
    assert "hvdtrain: job failed: rank 1 on" in stderr and "SIGKILL" in stderr
    if restarts == 0:
        assert code != 0 and "restarting" not in stderr
        return
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    assert "restarting the job (1 of 1)" in stderr
    assert re.search(r"resuming from \S+ckpt-[0-9a-f]{8}-epoch0000[1-8]", stdout)
    assert _digest(stdout) == straight["api"][0]
    assert json.loads((logs.with_name("logs-restart1") / "rank-1.json").read_text())["exit_code"] == 0


def _job_state(job_id, env):
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def test_a_slurm_job_warned_with_usr2_requeues_and_finishes_exactly(slurm_env, tmp_path, straight):
    submit = subprocess.Popen([HVDTRAIN, "slurm", "submit", "--nodes", "1", "--ntasks-per-node", "2", "--signal",
                               "USR2", "--wait", "--", sys.executable, WORKER, "run"], cwd=tmp_path, env=slurm_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("hvdtrain-runs/slurm-*/rank-0.progress")):  # training is under way
        assert submit.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.05)
    (progress,) = tmp_path.glob("hvdtrain-runs/slurm-*/rank-0.progress")
    job_id = progress.parent.name.removeprefix("slurm-")
    subprocess.run(["scancel", "--signal=USR2", "--batch", job_id], env=slurm_env, check=True)
    code, stdout, stderr = _finish(submit, timeout=300)
    assert code == 0 and f"job {job_id}: COMPLETED" in stdout, stdout + stderr
    assert _job_state(job_id, slurm_env)["Restarts"] == "1"
    log = Path(_job_state(job_id, slurm_env)["StdOut"]).read_text()
    assert "stopping on USR2/TERM: saved" in log and "requeueing job" in log and "resuming from" in log
    assert _digest(log) == straight["api"][0]
