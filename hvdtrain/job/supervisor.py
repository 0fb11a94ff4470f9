"""``hvdtrain supervise``: the process every launcher starts for a rank.

It runs the rank's command as its child, copies the child's output to this process's stdout and
to ``RUN_DIR/rank-N.log``, and records how the child ended in ``RUN_DIR/rank-N.json``. If the
supervisor itself is killed, the kernel kills the child too (PR_SET_PDEATHSIG), so no rank is
left behind waiting in a collective.

The rank ends when its process ends: a helper it started (``tensorboard``, ``nvidia-smi dmon &``)
that still holds its output gets ``DRAIN_S`` seconds, then the rank's process group and every
process re-parented to the supervisor (PR_SET_CHILD_SUBREAPER: a ``setsid`` daemon too) are
killed, so no helper holds the allocation. The supervisor's signal handlers are in place before
the fork, and the forwarded signals stay blocked from before the fork until the child is known
(in the child, until just before exec): a warning that comes at once is forwarded, never lost or
fatal.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from hvdtrain.errors import HvdtrainError
from hvdtrain.job.failure import RankReport, classify_returncode, extract_traceback, write_report
from hvdtrain.job.paths import RUN_DIR_VARIABLE, RunPaths, claim_run_dir
from hvdtrain.job.progress import read_progress
from hvdtrain.job.ranks import rank_from_env
from hvdtrain.job.signals import FORWARDED_SIGNALS, ignore_at_exit

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KEPT_LINES = 200
DRAIN_S = 2.0  # how long the rank's helpers may still write after the rank exited


def _prctl(option: int, value: int) -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def _child_setup(parent: int) -> Callable[[], None]:
    def setup() -> None:
        """In the child, before exec: SIGKILL me when my parent (the supervisor) dies, unless it
        already died since the fork; then take the forwarded signals as they come."""
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(128 + signal.SIGKILL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    return setup


def supervise(command: Sequence[str], run_dir: Path, env: Mapping[str, str]) -> int:
    """Run one rank; return its exit status (128 + N when killed by signal N)."""
    rank = rank_from_env(env)
    paths = RunPaths(run_dir)
    claim_run_dir(run_dir, os.getuid(), fresh=False)  # made by hvdtrain run, or here on a node of its own
    log_path = paths.log(rank)
    log = open_log(log_path)
    child_env = {**env, RUN_DIR_VARIABLE: str(run_dir), "PYTHONUNBUFFERED": "1"}
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in started:
            child.send_signal(signum)

    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    for signum in FORWARDED_SIGNALS:  # the same set hvdtrain run passes to the launcher
        signal.signal(signum, forward)
    ignore_at_exit(FORWARDED_SIGNALS)
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        started.append(subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=child_env, process_group=0, preexec_fn=_child_setup(os.getpid())))
    except OSError as exc:
        raise HvdtrainError(f"rank {rank} cannot start {command[0]!r}: {exc.strerror}",
                            "check the command after --") from None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # a signal that came meanwhile: forwarded now
    child = started[0]
    report = RankReport(rank=rank, host=socket.gethostname(), pid=child.pid, log=str(log_path))
    write_report(paths, report)
    tail: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
    assert child.stdout is not None and child.stderr is not None
    streams = {child.stdout.fileno(): sys.stdout.buffer, child.stderr.fileno(): sys.stderr.buffer}
    exited = os.pidfd_open(child.pid)
    try:
        with log:
            copy_output(streams, log, tail, exited, lambda: end_helpers(child))
    finally:
        os.close(exited)
    end_helpers(child)  # also those that hold no pipe
    code, signame = classify_returncode(child.wait())
    lines = list(tail)
    write_report(paths, RankReport(
        rank=rank, host=report.host, pid=child.pid, log=str(log_path), running=False, exit_code=code,
        signal=signame, ended_at=time.time(), last_lines=lines[-20:], traceback=extract_traceback(lines),
        progress=read_progress(paths, rank)))
    return code


def open_log(path: Path) -> BinaryIO:
    """The rank's log, this user's own: appended to (a requeued job keeps the earlier attempt's lines),
    never through a link, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_nlink != 1:
        os.close(fd)
        raise HvdtrainError(f"{path} is not a log file of yours alone", "use a new --output-dir")
    return os.fdopen(fd, "ab")


def copy_output(streams: dict[int, BinaryIO], log: BinaryIO, tail: collections.deque[str], exited: int,
                end_helpers: Callable[[], None], drain_s: float = DRAIN_S) -> None:
    """Copy each child pipe to its own stream and both to the log, a whole line at a time, until
    both pipes close; once ``exited`` (the child's pidfd) is readable, for at most ``drain_s``
    more seconds, then ``end_helpers()`` and read what is left. Whole lines matter: the launcher
    merges every rank's output, and a line written in two pieces (Python prints text and newline
    separately) could get another rank's line spliced into it."""
    partial = {fd: b"" for fd in streams}
    deadline: float | None = None  # set when the child exited, cleared when its helpers were ended
    with selectors.DefaultSelector() as selector:
        for fd in [*streams, exited]:
            selector.register(fd, selectors.EVENT_READ)
        while any(fd in selector.get_map() for fd in streams):
            ready = selector.select(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if not ready and deadline is not None:  # a helper still holds the pipes
                end_helpers()
                deadline = None
            for key, _ in ready:
                fd = key.fd
                if fd == exited:
                    selector.unregister(fd)
                    deadline = time.monotonic() + drain_s
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                    chunk = b"\n" if partial[fd] else b""  # end the last unterminated line
                *lines, partial[fd] = (partial[fd] + chunk).split(b"\n")
                if not lines:
                    continue
                block = b"".join(line + b"\n" for line in lines)
                streams[fd].write(block)
                streams[fd].flush()
                log.write(block)
                log.flush()
                tail.extend(line.decode(errors="replace") for line in lines)


def end_helpers(child: subprocess.Popen[bytes]) -> None:
    """Kill what the rank left running: its process group, and whatever was re-parented to this
    supervisor (its subreaper), until none is left; each is reaped."""
    child.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    while orphans := children(Path("/proc/self/task")):
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def children(tasks: Path) -> set[int]:
    """This process's children (``/proc/self/task/*/children``)."""
    found: set[int] = set()
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found
