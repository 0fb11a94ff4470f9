"""Slurm: golden renders, quoting, and real jobs on a real local cluster (slurmctld + 2 slurmd)."""

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import HVDTRAIN, check_golden, cli, hvdtrain

from hvdtrain.cli.slurm import write_record
from hvdtrain.errors import HvdtrainError
from hvdtrain.slurm.sbatch import SbatchSpec, lint_script, read_template, render_script

pytestmark = pytest.mark.mpi
TRAIN = (HVDTRAIN, "train", "--model", "mlp", "--epochs", "2", "--out", "out")


def _spec(**changes):
    base = dict(command=("hvdtrain", "train", "--epochs", "10", "--out", "runs/x"), nodes=2, ntasks_per_node=4,
                time="1:00:00", partition="gpu", account="proj", cpus_per_task=8, gpus_per_node=4,
                extra=("--exclusive",), produced_by=("hvdtrain", "slurm", "render"))
    return SbatchSpec(**{**base, **changes})


@pytest.mark.parametrize("launcher", ["mpirun", "srun", "horovodrun"])
def test_golden_renders(launcher):
    spec = _spec(launcher=launcher)
    script = render_script(spec, read_template(launcher, None))
    check_golden(f"slurm_{launcher}.sbatch", script)
    assert lint_script(spec, script) == []
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize(("signal_name", "train_args", "mismatch"), [
    ("USR1", (), False), ("USR2", (), False),  # no --preempt-signal: it stops on the job's ($HVDTRAIN_PREEMPT_SIGNAL)
    ("USR2", ("--preempt-signal", "USR2"), False),
    ("USR2", ("--preempt-signal=USR2",), False), ("USR1", ("--preempt-signal", "USR2"), True),
    ("TERM", (), False),  # the trainer always stops on TERM
    ("USR2", ("--config", "train.yaml"), False),  # its signal is in the file: not knowable here
])
def test_lint_checks_that_the_job_and_the_trainer_agree_on_the_signal(signal_name, train_args, mismatch):
    spec = _spec(signal=signal_name, command=("hvdtrain", "train", "--checkpoint-dir", "c", *train_args))
    problems = lint_script(spec, render_script(spec, read_template("mpirun", None)))
    assert any("hvdtrain train stops on" in problem for problem in problems) is mismatch, problems
    other = _spec(signal=signal_name, command=("python", "mine.py"))  # not hvdtrain train: nothing to compare
    assert lint_script(other, render_script(other, read_template("mpirun", None))) == []


def test_lint_finds_problems():
    spec = _spec(gpus_per_node=2, requeue=True)
    problems = lint_script(spec, "#SBATCH --ntasks=8\nsrun --ntasks=6 x\n")
    assert any("no --signal" in p for p in problems) and any("--ntasks without" in p for p in problems)
    assert any("2 GPUs per node but 4 ranks" in p for p in problems)
    assert any("does not start 8 ranks" in p for p in problems)


@pytest.mark.parametrize(("launcher", "nodes", "gpus", "unsafe"), [
    ("horovodrun", 2, 4, True), ("horovodrun", 1, 4, False),  # one node: the ranks start inside the job
    ("horovodrun", 2, None, False), ("mpirun", 2, 4, False), ("srun", 2, 4, False)])
def test_lint_says_horovodrun_is_unsafe_with_gpus_on_shared_nodes(launcher, nodes, gpus, unsafe):
    spec = _spec(launcher=launcher, nodes=nodes, ntasks_per_node=4, gpus_per_node=gpus, extra=())
    problems = lint_script(spec, render_script(spec, read_template(launcher, None)))
    assert any("outside the job's Slurm step" in problem for problem in problems) is unsafe, problems
    exclusive = _spec(launcher=launcher, nodes=nodes, ntasks_per_node=4, gpus_per_node=gpus)  # whole nodes
    assert not any("Slurm step" in problem for problem in lint_script(exclusive, render_script(
        exclusive, read_template(launcher, None))))


AWKWARD = ["a 0", "a'; echo foo", 'x"; touch CANARY; "', "$(touch CANARY)", "`touch CANARY`", "a;b|c&d"]


@pytest.mark.parametrize("value", AWKWARD)
def test_quoting_never_runs_the_payload(value, tmp_path):
    # A stand-in for hvdtrain that records its arguments, one per line.
    stub = tmp_path / "bin" / "hvdtrain"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >> "$ARGS_LOG"\n')
    stub.chmod(0o755)
    spec = _spec(job_name=value, output=f"{value}/%j.out", command=("echo", value), hvdtrain=str(stub))
    script = render_script(spec, read_template("mpirun", None))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_NTASKS": "8", "ARGS_LOG": str(tmp_path / "args")}
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=False, capture_output=True)
    assert not list(tmp_path.rglob("CANARY"))
    assert value in (tmp_path / "args").read_text().splitlines()  # arrived verbatim, as one argument


def _submit(env, cwd, *options, command=TRAIN, wait=True):
    return hvdtrain("slurm", "submit", *options, *(["--wait"] if wait else []), "--", *command, env=env, cwd=cwd,
                    timeout=300)


@pytest.mark.parametrize(("launcher", "layout"), [("mpirun", ("--nodes", "2", "--ntasks-per-node", "1")),
                                                  ("srun", ("--nodes", "2", "--ntasks-per-node", "1")),
                                                  ("horovodrun", ("--nodes", "1", "--ntasks-per-node", "2"))])
def test_each_template_runs_a_two_rank_job(launcher, layout, slurm_env, tmp_path):
    done = _submit(slurm_env, tmp_path, "--launcher", launcher, *layout)
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split()[0]
    assert f"job {job_id}: COMPLETED" in done.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["world_size"] == 2 and set(summary["rank_checksums"]) == {summary["param_checksum"]}
    if launcher == "mpirun":  # two emulated nodes: the hostfile names both, one slot each
        hosts = (tmp_path / "hvdtrain-runs" / f"slurm-{job_id}" / "hosts").read_text()
        assert hosts == "node1 slots=1\nnode2 slots=1\n"


def _state(job_id, env):
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def _wait_until(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.mark.parametrize("name", ["USR1", "USR2"])
def test_preempted_job_checkpoints_requeues_and_finishes_exactly(name, slurm_env, tmp_path):
    # 20 epochs (a few seconds): with Horovod's waits that sleep, 3 epochs ended in 0.6 s, before the
    # signal had made its way from scancel through the batch script, mpirun and the supervisors.
    train = (HVDTRAIN, "train", "--model", "cnn", "--epochs", "20", "--batch-size", "16", "--checkpoint-dir",
             "ckpt", "--auto-resume", "--preempt-check-every", "5", "--preempt-signal", name, "--out", "out")
    done = _submit(slurm_env, tmp_path, "--nodes", "1", "--ntasks-per-node", "2", "--signal", name, command=train,
                   wait=False)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    progress = tmp_path / "hvdtrain-runs" / f"slurm-{job_id}" / "rank-0.progress"
    _wait_until(progress.exists)  # training is under way
    subprocess.run(["scancel", f"--signal={name}", "--batch", job_id], env=slurm_env, check=True)
    _wait_until(lambda: _state(job_id, slurm_env).get("JobState") == "COMPLETED", timeout=240)
    assert _state(job_id, slurm_env)["Restarts"] == "1"
    log = Path(_state(job_id, slurm_env)["StdOut"]).read_text()
    assert f"stopping on {name}/TERM: saved" in log and "requeueing job" in log and "resuming from" in log
    # Uninterrupted, and with no checkpoint directory: nothing to resume from.
    straight = hvdtrain("run", "-np", "2", "--", *train[:8], "--out", "straight", cwd=tmp_path, timeout=300)
    assert straight.returncode == 0, straight.stderr
    resumed = json.loads((tmp_path / "out" / "summary.json").read_text())
    expected = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert resumed["param_checksum"] == expected["param_checksum"]


def test_status_logs_and_cancel_on_a_running_job(slurm_env, tmp_path):
    done = _submit(slurm_env, tmp_path, command=("sh", "-c", "echo started; sleep 300"), wait=False)
    job_id = done.stdout.strip()
    _wait_until(lambda: _state(job_id, slurm_env).get("JobState") == "RUNNING")
    status = hvdtrain("slurm", "status", job_id, env=slurm_env)
    assert status.returncode == 0 and "RUNNING" in status.stdout and "node1" in status.stdout
    _wait_until(lambda: "started" in hvdtrain("slurm", "logs", job_id, env=slurm_env).stdout)
    assert hvdtrain("slurm", "cancel", job_id, env=slurm_env).stdout.strip() == f"cancelled {job_id}"
    _wait_until(lambda: _state(job_id, slurm_env).get("JobState") == "CANCELLED")
    follow = hvdtrain("slurm", "logs", job_id, "--follow", env=slurm_env, timeout=60)
    assert follow.returncode == 0 and "started" in follow.stdout


def test_submit_wait_reports_a_failed_job(slurm_env, tmp_path):
    done = _submit(slurm_env, tmp_path, command=("sh", "-c", "echo going down; exit 3"))
    assert done.returncode == 1
    assert "FAILED" in done.stderr and "output: " in done.stderr and "slurm-" in done.stderr


def test_dry_run_submits_nothing(tmp_path):
    done = cli("slurm", "submit", "--dry-run", "--", "true", cwd=tmp_path)  # no cluster needed, none started
    assert done.returncode == 0 and done.stdout.startswith("#!/bin/bash")
    assert "# would run: sbatch --parsable < hvdtrain-runs/hvdtrain-" in done.stdout
    assert not (tmp_path / "hvdtrain-runs").exists()


def test_submit_gives_sbatch_the_rendered_script_whatever_is_planted_in_its_place(slurm_env, tmp_path):
    """A group member who links every name the record could get to a script of theirs runs nothing:
    the record is created exclusively (refused if taken), and sbatch reads the text from stdin."""
    done = _submit(slurm_env, tmp_path, command=("sh", "-c", "echo mine"))
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = done.stdout.split()[0]
    (record,) = (tmp_path / "hvdtrain-runs").glob("hvdtrain-*.sbatch")
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    kept = tmp_path / "batch.sh"
    subprocess.run(["scontrol", "write", "batch_script", job_id, str(kept)], env=slurm_env, check=True)
    assert kept.read_text() == record.read_text() and "echo mine" in kept.read_text()
    target = tmp_path / "victim.sh"
    target.write_text("theirs")
    planted = tmp_path / "planted.sbatch"
    planted.symlink_to(target)
    with pytest.raises(HvdtrainError, match="cannot create"):
        write_record(planted, "#!/bin/bash\n")
    assert target.read_text() == "theirs"
