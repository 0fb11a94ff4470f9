"""Talking to Slurm about jobs: pure parsers, and the only calls to sbatch, scontrol and scancel."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

from hvdtrain.errors import HvdtrainError

# States a job does not leave (a requeued job goes back to PENDING, which is not one of them).
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}
_JOB_ID = re.compile(r"^\d+(_\d+)?$")


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise HvdtrainError(f"{job_id!r} is not a Slurm job id", "use the number sbatch printed, e.g. 1234")
    return job_id


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``JOBID`` or ``JOBID;CLUSTER``."""
    job_id = text.strip().split(";")[0]
    if not _JOB_ID.match(job_id):
        raise HvdtrainError(f"sbatch answered {text.strip()!r}, not a job id", "run sbatch by hand to see why")
    return job_id


def parse_scontrol_job(text: str) -> dict[str, str]:
    """``scontrol show job -o ID``: one line of KEY=VALUE fields (values may hold spaces only in
    Command= and WorkDir= at the end; we split on the known ``Key=`` pattern)."""
    fields: dict[str, str] = {}
    for match in re.finditer(r"(\w+(?::\w+)*)=(.*?)(?=\s+\w+(?::\w+)*=|$)", text.strip()):
        fields.setdefault(match.group(1), match.group(2))
    return fields


def _slurm(*argv: str, timeout: float = 30, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise HvdtrainError(f"{argv[0]} not found", "run on a Slurm login node, or `make slurm-up` for a local one")
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=stdin)


def submit_script(script: str) -> str:
    """sbatch the script's text from standard input: what runs is what was rendered, whatever happens
    to a file of the same name meanwhile."""
    done = _slurm("sbatch", "--parsable", stdin=script)
    if done.returncode != 0:
        raise HvdtrainError(f"sbatch refused the script: {done.stderr.strip().splitlines()[-1:]}",
                            "fix the options it names (hvdtrain slurm render --lint checks many)")
    return parse_sbatch_parsable(done.stdout)


def show_job(job_id: str) -> dict[str, str] | None:
    """The job's fields, or None once Slurm has forgotten it (after MinJobAge)."""
    done = _slurm("scontrol", "show", "job", "-o", check_job_id(job_id))
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:
            return None
        raise HvdtrainError(f"scontrol failed: {done.stderr.strip()}", "is the Slurm controller reachable?")
    return parse_scontrol_job(done.stdout)


def cancel_job(job_id: str) -> None:
    done = _slurm("scancel", check_job_id(job_id))
    if done.returncode != 0:
        raise HvdtrainError(f"scancel {job_id} failed: {done.stderr.strip()}", "check the job id with squeue")


def wait_for_job(job_id: str, poll_s: float = 1.0) -> dict[str, str]:
    """Poll until the job reaches a state it will not leave; return its last fields."""
    while True:
        fields = show_job(job_id)
        if fields is None:
            raise HvdtrainError(f"job {job_id} is no longer known to Slurm", "see its output file")
        if fields.get("JobState") in TERMINAL:
            return fields
        time.sleep(poll_s)


def show_nodes() -> str:
    """``scontrol show node -o``: every node's NodeName and NodeHostName (empty without scontrol)."""
    if shutil.which("scontrol") is None:
        return ""
    return _slurm("scontrol", "show", "node", "-o").stdout
