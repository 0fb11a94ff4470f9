"""A broken job ends quickly and says why: a rank that raises, is killed, or stalls."""

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import HVDTRAIN, hvdtrain

pytestmark = pytest.mark.mpi

FAULTY = textwrap.dedent('''
    import os
    import time

    from torch import nn


    class Faulty(nn.Module):
        """An MLP whose rank 1 fails on its 30th training step, as FAULT says."""

        def __init__(self, num_classes):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
            self.steps = 0

        def forward(self, x):
            if self.training and os.environ.get("OMPI_COMM_WORLD_RANK") == "1":
                self.steps += 1
                if self.steps == 30 and os.environ.get("FAULT") == "raise":
                    raise RuntimeError("injected failure on rank 1")
                if self.steps == 30 and os.environ.get("FAULT") == "stall":
                    time.sleep(3600)
            return self.net(x)


    def build(num_classes):
        return Faulty(num_classes)
''')


@pytest.fixture
def faulty_dir(tmp_path):
    (tmp_path / "faulty.py").write_text(FAULTY)
    return tmp_path


def _run_args(run_dir, fault, *extra):
    return ["run", "-np", "2", "--output-dir", str(run_dir), "-x", f"FAULT={fault}", *extra, "--",
            HVDTRAIN, "train", "--model", "faulty:build", "--epochs", "200", "--batch-size", "16"]


def test_a_rank_that_raises_ends_the_job_with_its_traceback(faulty_dir):
    run_dir = faulty_dir / "run"
    done = hvdtrain(*_run_args(run_dir, "raise"), cwd=faulty_dir, timeout=120)
    assert done.returncode != 0
    failure = json.loads((run_dir / "failure.json").read_text())
    root = failure["root_cause"]
    assert root["rank"] == 1 and root["exit_code"] == 1 and root["host"] and root["pid"] > 0
    assert root["traceback"][0].startswith("Traceback") and "injected failure on rank 1" in root["traceback"][-1]
    assert failure["cause"].startswith("rank 1 on ")
    assert "hvdtrain: job failed: rank 1 on" in done.stderr and "injected failure on rank 1" in done.stderr


def test_a_killed_rank_ends_the_job_within_30_seconds(faulty_dir):
    run_dir = faulty_dir / "run"
    job = subprocess.Popen([HVDTRAIN, *_run_args(run_dir, "none")], cwd=faulty_dir, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "rank-1.progress").exists():  # training is under way
            assert job.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        pid = json.loads((run_dir / "rank-1.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        _, stderr = job.communicate(timeout=30)  # TimeoutExpired here fails the test
    finally:
        job.kill()
    assert job.returncode != 0
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["root_cause"]["rank"] == 1 and failure["root_cause"]["signal"] == "SIGKILL"
    assert failure["root_cause"]["pid"] == pid
    assert f"rank 1 on {failure['root_cause']['host']} (pid {pid}) was killed by signal SIGKILL" in stderr


def test_a_stalled_rank_is_named_with_its_last_step(faulty_dir):
    run_dir = faulty_dir / "run"
    # Stall timeout 10 s: the job must end well inside the 90 s this call allows (else TimeoutExpired).
    done = hvdtrain(*_run_args(run_dir, "stall", "--stall-timeout", "10"), cwd=faulty_dir, timeout=90)
    assert done.returncode != 0
    failure = json.loads((run_dir / "failure.json").read_text())
    assert [stalled["rank"] for stalled in failure["stalled"]] == [1]
    stalled = failure["stalled"][0]
    assert stalled["host"] and stalled["waiting_for"]
    assert stalled["last_progress"] == {"epoch": 1, "step": 29}  # it stalled in its 30th step
    assert "stalled: rank(s) 1 never reached a collective" in done.stderr


def test_a_successful_job_writes_no_failure_report(tmp_path):
    run_dir = tmp_path / "run"
    done = hvdtrain("run", "-np", "2", "--output-dir", str(run_dir), "--", HVDTRAIN, "train", "--model", "mlp",
                    "--epochs", "1")
    assert done.returncode == 0, done.stderr
    assert not (run_dir / "failure.json").exists()
    reports = [json.loads((run_dir / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["rank"], r["exit_code"], r["running"]) for r in reports] == [(0, 0, False), (1, 0, False)]
    assert "epoch 1/1" in (run_dir / "rank-0.log").read_text()


def test_elastic_training_survives_a_lost_worker(tmp_path):
    discover = tmp_path / "discover.sh"
    # Two "hosts" that are both this machine: the failed one is blacklisted, the other goes on.
    discover.write_text("#!/bin/sh\necho localhost:1\necho 127.0.0.1:1\n")
    discover.chmod(0o755)
    run_dir, out = tmp_path / "run", tmp_path / "out"
    secret = f"token-{os.getpid()}-{tmp_path.name}"  # in the caller's environment, forwarded to no one
    job = subprocess.Popen([HVDTRAIN, "run", "-np", "2", "--elastic", "--min-np", "1", "--host-discovery-script",
                            str(discover), "--output-dir", str(run_dir), "--", HVDTRAIN, "train", "--elastic",
                            "--model", "mlp", "--epochs", "15", "--commit-every", "5", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "API_TOKEN": secret})
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "rank-1.progress").exists():
            assert job.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        lines = b"\n".join(_cmdline(pid) for pid in filter(str.isdigit, os.listdir("/proc")))
        assert b"HOROVOD_HOSTNAME=" in lines and secret.encode() not in lines  # horovodrun's K=V lines, no secret
        assert (run_dir / "discover-hosts").read_text().endswith(f"discover-hosts {discover}\n")
        os.kill(json.loads((run_dir / "rank-1.json").read_text())["pid"], signal.SIGKILL)
        stdout, stderr = job.communicate(timeout=180)
    finally:
        job.kill()
    assert job.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert "elastic reset: 1 rank(s) now, this is rank 0" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["rank_checksums"] == [summary["param_checksum"]]
    assert summary["final_val_acc"] > 0.9
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["epoch"] == 15 and metrics[-1]["world_size"] == 1


@pytest.mark.parametrize(("script", "exit_code"), [
    ("sleep {marker} & exit 0", 0),  # holds the rank's output pipes
    ("sleep {marker} & kill -SEGV $$", 128 + signal.SIGSEGV),  # the same, from a crashed rank
    ("setsid sleep {marker} & exit 0", 0),  # its own session: only the subreaper finds it
    ("nohup sleep {marker} >/dev/null 2>&1 & exit 0", 0),  # holds nothing, would outlive the job
], ids=["pipes", "crash", "setsid", "nohup"])
def test_a_helper_the_rank_started_ends_with_the_rank(script, exit_code, tmp_path):
    marker = f"{600 + os.getpid() % 1000}.{len(script)}"  # this test's own sleep, found by its arguments
    try:
        done = hvdtrain("run", "-np", "2", "--output-dir", str(tmp_path / "runs"), "--", "sh", "-c",
                        script.format(marker=marker), timeout=60)
        survivors = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout.split()
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"sleep {marker}"], check=False)
    assert survivors == [], survivors
    assert done.returncode == exit_code, done.stdout[-2000:] + done.stderr[-2000:]
    reports = [json.loads(path.read_text()) for path in (tmp_path / "runs").glob("rank-*.json")]
    assert sorted(report["exit_code"] for report in reports) == [exit_code] * 2


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def test_host_discovery_passes_on_only_valid_hosts(tmp_path):
    canary = tmp_path / "canary"
    script = tmp_path / "discover.sh"
    script.write_text(f"#!/bin/sh\necho node1:4\necho 'node2;touch {canary}:2'\necho '$(touch {canary}):1'\n"
                      "echo\necho 10.0.0.5:2\necho '[fe80::1]:2'\nexit 3\n")
    script.chmod(0o700)
    done = hvdtrain("discover-hosts", str(script))
    assert done.returncode == 3 and done.stdout == "node1:4\n10.0.0.5:2\n", done.stdout + done.stderr
    assert done.stderr.count("hvdtrain: ignoring a line of") == 3 and not canary.exists()
    assert "horovodrun takes no IPv6 address" in done.stderr
