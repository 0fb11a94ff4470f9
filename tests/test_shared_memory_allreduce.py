"""within-node-shared-memory-allreduce.patch under real mpirun ranks of the installed Horovod: the
shared-memory data step gives every rank the same, correct result, the same bits as upstream's
MPI_Allreduce, leaves no file behind (nor lets one of a dead job stay), is the step the timeline
shows, gives way to MPI with one warning when /dev/shm cannot hold its segment, and never waits
forever for a rank that died."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import HVDTRAIN, REPO

WORKER = str(REPO / "tests" / "shm_allreduce_worker.py")
SHM = Path("/dev/shm")
# A mount namespace whose /dev/shm is an empty read-only tmpfs; Open MPI keeps its own segments in /tmp.
READ_ONLY_SHM = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro,size=1m tmpfs /dev/shm && exec "$@"', "sh"]


def segments() -> set[str]:
    return {path.name for path in SHM.glob("hvdtrain-allreduce-*")}


def run_worker(tmp_path: Path, np_: int, mode: str, read_only_shm: bool = False
               ) -> tuple[list[dict[str, object]], str, str]:
    """Each rank's report, checked, rank 0's Horovod timeline, and the job's output."""
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
    return reports, timeline.read_text(), done.stdout + done.stderr


def test_two_ranks_get_the_bits_of_mpi_allreduce(tmp_path):
    shm, shm_trace, output = run_worker(tmp_path, 2, "shm")
    mpi, mpi_trace, _ = run_worker(tmp_path, 2, "mpi")
    assert "shared-memory all-reduce is off" not in output
    # Two ranks: each element is one addition, a + b, in either path.
    assert shm[0]["digest"] == mpi[0]["digest"]
    assert "SHM_ALLREDUCE" in shm_trace and "MPI_ALLREDUCE" in shm_trace  # float16, int32, max keep MPI
    assert "SHM_ALLREDUCE" not in mpi_trace and "MPI_ALLREDUCE" in mpi_trace


def test_three_ranks_split_each_piece_unevenly(tmp_path):
    _, trace, _ = run_worker(tmp_path, 3, "shm")
    assert "SHM_ALLREDUCE" in trace


def test_a_read_only_dev_shm_leaves_the_data_step_to_mpi(tmp_path):
    reports, trace, output = run_worker(tmp_path, 2, "shm", read_only_shm=True)
    mpi, _, _ = run_worker(tmp_path, 2, "mpi")
    assert reports[0]["digest"] == mpi[0]["digest"]
    assert "SHM_ALLREDUCE" not in trace and "MPI_ALLREDUCE" in trace
    (warning,) = [line for line in output.splitlines() if "shared-memory all-reduce is off" in line]
    assert f"(rank 0: open /dev/shm/hvdtrain-allreduce-{os.getuid()}-" in warning, warning
    assert "Read-only file system); ranks on this node reduce through MPI_Allreduce" in warning, warning


def test_a_segment_a_dead_job_left_is_removed_and_a_live_ones_kept(tmp_path):
    ended = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    stale = SHM / f"hvdtrain-allreduce-{os.getuid()}-{ended}-00000000deadbeef"
    live = SHM / f"hvdtrain-allreduce-{os.getuid()}-{os.getpid()}-00000000cafef00d"
    try:
        for path in (stale, live):
            path.write_bytes(b"")
        _, trace, _ = run_worker(tmp_path, 2, "shm")
        assert not stale.exists() and live.exists()
        assert "SHM_ALLREDUCE" in trace  # files under this user's prefix take nothing from the job
    finally:
        stale.unlink(missing_ok=True)
        live.unlink(missing_ok=True)


LOOP = """
import sys, horovod.torch as hvd, torch
from pathlib import Path
hvd.init()
tensor = torch.ones(1 << 24)  # 64 MiB: most of each step is the shared-memory data step
for step in range(100000):
    hvd.allreduce_(tensor, op=hvd.Average, name="loop")
    if step == 2:
        Path(sys.argv[1], f"looping.{hvd.rank()}").touch()
"""


def test_a_rank_killed_during_all_reduces_leaves_no_segment_and_no_waiting_peer(tmp_path):
    before = segments()
    run_dir = tmp_path / "run"
    job = subprocess.Popen([HVDTRAIN, "run", "-np", "2", "--output-dir", str(run_dir), "--", sys.executable, "-c",
                            LOOP, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "looping.1").exists():
            assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.stdout else ""
            time.sleep(0.1)
        rank0, rank1 = (json.loads((run_dir / f"rank-{rank}.json").read_text())["pid"] for rank in (0, 1))
        os.kill(rank1, signal.SIGKILL)
        output, _ = job.communicate(timeout=60)  # rank 0 does not wait for rank 1 forever
    finally:
        job.kill()
    assert job.returncode != 0, output[-2000:]
    assert not Path(f"/proc/{rank0}").exists() and segments() <= before


DYING = """
import os, signal, threading, horovod.torch as hvd, torch
hvd.init()
tensor = torch.ones(1 << 24)
if hvd.rank() == 1:
    threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
try:
    for step in range(100000):
        hvd.allreduce_(tensor, op=hvd.Average, name="loop")
except Exception as error:
    print(f"rank {hvd.rank()}: {type(error).__name__}: {error}", flush=True)
    os._exit(3)
"""


def test_a_rank_waiting_for_a_dead_rank_fails_the_all_reduce(tmp_path):
    """Without a launcher that ends the job (mpirun --enable-recovery keeps the survivor), rank 0
    finds in the data step that rank 1 is gone, and Horovod raises instead of waiting forever."""
    before = segments()
    as_root = ["--allow-run-as-root"] if os.getuid() == 0 else []
    done = subprocess.run(["mpirun", *as_root, "-np", "2", "--bind-to", "none", "--enable-recovery", sys.executable,
                           "-c", DYING], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert re.search(r"rank 0: HorovodInternalError: hvdtrain: the shared-memory all-reduce lost rank 1 \(pid \d+\), "
                     r"which ended during it", done.stdout), done.stdout[-2000:] + done.stderr[-2000:]
    assert segments() <= before
