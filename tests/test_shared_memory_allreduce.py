"""within-node-shared-memory-allreduce.patch under real mpirun ranks of the installed Horovod: the
shared-memory data step gives every rank the same, correct result, the same bits as upstream's
MPI_Allreduce, leaves no file behind, is the step the timeline shows, and gives way to MPI when
/dev/shm cannot hold its segment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import HVDTRAIN, REPO

WORKER = str(REPO / "tests" / "shm_allreduce_worker.py")
SHM = Path("/dev/shm")
# A mount namespace whose /dev/shm is an empty read-only tmpfs; Open MPI keeps its own segments in /tmp.
READ_ONLY_SHM = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro,size=1m tmpfs /dev/shm && exec "$@"', "sh"]


def segments() -> set[str]:
    return {path.name for path in SHM.glob("hvdtrain-allreduce-*")}


def run_worker(tmp_path: Path, np_: int, mode: str, read_only_shm: bool = False) -> tuple[list[dict[str, object]], str]:
    """Each rank's report, checked, and rank 0's Horovod timeline."""
    out, timeline = tmp_path / f"{mode}-{np_}", tmp_path / f"timeline-{mode}-{np_}.json"
    before = segments()
    mpi_args = ["--mpi-args", "--mca btl_vader_backing_directory /tmp"] if read_only_shm else []
    argv = [*(READ_ONLY_SHM if read_only_shm else []), HVDTRAIN, "run", "-np", str(np_), "--oversubscribe",
            "--horovod-allreduce", mode, "--timeline", str(timeline), *mpi_args, "--", sys.executable, WORKER, str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert segments() <= before, "the shared-memory segment outlived the job"
    reports = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(np_)]
    for report in reports:
        assert report["size"] == np_ and report["errors"] == [], report
    assert len({report["digest"] for report in reports}) == 1, "ranks hold different results"
    return reports, timeline.read_text()


def test_two_ranks_get_the_bits_of_mpi_allreduce(tmp_path):
    shm, shm_trace = run_worker(tmp_path, 2, "shm")
    mpi, mpi_trace = run_worker(tmp_path, 2, "mpi")
    # Two ranks: each element is one addition, a + b, in either path.
    assert shm[0]["digest"] == mpi[0]["digest"]
    assert "SHM_ALLREDUCE" in shm_trace and "MPI_ALLREDUCE" in shm_trace  # float16, int32, max keep MPI
    assert "SHM_ALLREDUCE" not in mpi_trace and "MPI_ALLREDUCE" in mpi_trace


def test_three_ranks_split_each_piece_unevenly(tmp_path):
    _, trace = run_worker(tmp_path, 3, "shm")
    assert "SHM_ALLREDUCE" in trace


def test_a_read_only_dev_shm_leaves_the_data_step_to_mpi(tmp_path):
    reports, trace = run_worker(tmp_path, 2, "shm", read_only_shm=True)
    mpi, _ = run_worker(tmp_path, 2, "mpi")
    assert reports[0]["digest"] == mpi[0]["digest"]
    assert "SHM_ALLREDUCE" not in trace and "MPI_ALLREDUCE" in trace
