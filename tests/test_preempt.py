"""Preemption with the signal the user names: the signal sent to `hvdtrain run` reaches the
trainer through mpirun and every rank's supervisor; the job saves the exact step, exits 75, and
--auto-resume then finishes bit-identical to a run that was never interrupted."""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HVDTRAIN, hvdtrain

from hvdtrain.job.signals import PREEMPTED_EXIT

pytestmark = pytest.mark.mpi

TRAIN = (HVDTRAIN, "train", "--model", "cnn", "--epochs", "20", "--batch-size", "16", "--preempt-check-every", "5")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "out"
    done = hvdtrain("run", "-np", "2", "--", *TRAIN, "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("name", ["USR1", "USR2"])
def test_preemption_signal_saves_the_step_and_resumes_bit_identical(name, tmp_path, uninterrupted):
    run_dir, ckpt, out = tmp_path / "run", tmp_path / "ckpt", tmp_path / "out"
    argv = [HVDTRAIN, "run", "-np", "2", "--output-dir", str(run_dir), "--", *TRAIN, "--checkpoint-dir", str(ckpt),
            "--auto-resume", "--preempt-signal", name, "--out", str(out)]
    job = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "rank-0.progress").exists():  # training is under way
            assert job.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        job.send_signal(signal.Signals[f"SIG{name}"])
        stdout, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == PREEMPTED_EXIT, stdout[-2000:] + stderr[-2000:]
    saved = re.search(rf"stopping on {name}/TERM: saved (\S+);", stdout)
    assert saved, stdout[-2000:]  # the exact step it stopped at (a step, or an epoch's start)
    assert re.fullmatch(r"ckpt-[0-9a-f]{8}-epoch\d{5}(-batch\d{6})?\.pt", Path(saved.group(1)).name)
    reports = [json.loads((run_dir / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["exit_code"] for report in reports] == [PREEMPTED_EXIT, PREEMPTED_EXIT]  # no rank was killed
    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {saved.group(1)}" in resumed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["param_checksum"] == uninterrupted["param_checksum"]
    assert set(summary["rank_checksums"]) == {summary["param_checksum"]}
