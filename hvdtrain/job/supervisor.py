"""``hvdtrain supervise``: the process every launcher starts for a rank.

It runs the rank's command as its child, copies the child's output to this process's stdout and
to ``RUN_DIR/rank-N.log``, and records how the child ended in ``RUN_DIR/rank-N.json``. If the
supervisor itself is killed, the kernel kills the child too (PR_SET_PDEATHSIG), so no rank is
left behind waiting in a collective.
"""

from __future__ import annotations

import collections
import ctypes
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
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
KEPT_LINES = 200


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when my parent (the supervisor) dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(command: Sequence[str], run_dir: Path, env: Mapping[str, str]) -> int:
    """Run one rank; return its exit status (128 + N when killed by signal N)."""
    rank = rank_from_env(env)
    paths = RunPaths(run_dir)
    claim_run_dir(run_dir, os.getuid(), fresh=False)  # made by hvdtrain run, or here on a node of its own
    log_path = paths.log(rank)
    log = open_log(log_path)
    child_env = {**env, RUN_DIR_VARIABLE: str(run_dir), "PYTHONUNBUFFERED": "1"}
    try:
        child = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=child_env, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise HvdtrainError(f"rank {rank} cannot start {command[0]!r}: {exc.strerror}",
                            "check the command after --") from None
    report = RankReport(rank=rank, host=socket.gethostname(), pid=child.pid, log=str(log_path))
    write_report(paths, report)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in FORWARDED_SIGNALS:  # the same set hvdtrain run passes to the launcher
        signal.signal(signum, forward)
    ignore_at_exit(FORWARDED_SIGNALS)
    tail: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
    assert child.stdout is not None and child.stderr is not None
    with log:
        copy_output({child.stdout.fileno(): sys.stdout.buffer, child.stderr.fileno(): sys.stderr.buffer}, log, tail)
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


def copy_output(streams: dict[int, BinaryIO], log: BinaryIO, tail: collections.deque[str]) -> None:
    """Copy each child pipe to its own stream and both to the log, a whole line at a time, until
    both pipes close. Whole lines matter: the launcher merges every rank's output, and a line
    written in two pieces (Python prints text and newline separately) could get another rank's
    line spliced into it."""
    partial = {fd: b"" for fd in streams}
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                fd = key.fd
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
