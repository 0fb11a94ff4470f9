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
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import BinaryIO

from hvdtrain.errors import HvdtrainError
from hvdtrain.failure import (
    RUN_DIR_VARIABLE,
    RankReport,
    classify_returncode,
    extract_traceback,
    rank_from_env,
    write_report,
)

PR_SET_PDEATHSIG = 1
KEPT_LINES = 200


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL me when my parent (the supervisor) dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(command: Sequence[str], run_dir: Path, env: Mapping[str, str]) -> int:
    """Run one rank; return its exit status (128 + N when killed by signal N)."""
    rank = rank_from_env(env)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"rank-{rank}.log"
    child_env = {**env, RUN_DIR_VARIABLE: str(run_dir), "PYTHONUNBUFFERED": "1"}
    try:
        child = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=child_env, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise HvdtrainError(f"rank {rank} cannot start {command[0]!r}: {exc.strerror}",
                            "check the command after --") from None
    report = RankReport(rank=rank, host=socket.gethostname(), pid=child.pid, log=str(log_path))
    write_report(run_dir, report)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, forward)
    tail: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
    assert child.stdout is not None and child.stderr is not None
    with log_path.open("wb") as log:
        copy_output({child.stdout.fileno(): sys.stdout.buffer, child.stderr.fileno(): sys.stderr.buffer}, log, tail)
    code, signame = classify_returncode(child.wait())
    lines = list(tail)
    write_report(run_dir, RankReport(
        rank=rank, host=report.host, pid=child.pid, log=str(log_path), running=False, exit_code=code,
        signal=signame, ended_at=time.time(), last_lines=lines[-20:], traceback=extract_traceback(lines),
        progress=read_progress(run_dir, rank)))
    return code


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


def progress_path(run_dir: Path, rank: int) -> Path:
    return run_dir / f"rank-{rank}.progress"


def read_progress(run_dir: Path, rank: int) -> dict[str, int] | None:
    try:
        epoch, step = progress_path(run_dir, rank).read_text().split()
        return {"epoch": int(epoch), "step": int(step)}
    except (OSError, ValueError):
        return None


class ProgressFile:
    """A rank's last finished step, for failure reports. The loop only stores two numbers; a
    daemon thread writes them every ``period_s``, so even a rank stuck in a collective (or a
    sleep) ends up with its exact last step on disk."""

    def __init__(self, env: Mapping[str, str], period_s: float = 0.5) -> None:
        run_dir = env.get(RUN_DIR_VARIABLE)
        self.path = progress_path(Path(run_dir), rank_from_env(env)) if run_dir else None
        self.period_s = period_s
        self.current: tuple[int, int] | None = None
        self.written: tuple[int, int] | None = None
        self.writer: threading.Thread | None = None

    def update(self, epoch: int, step: int, force: bool = False) -> None:
        if self.path is None:
            return
        self.current = (epoch, step)
        if force:
            self._write()
        if self.writer is None:
            self.writer = threading.Thread(target=self._keep_writing, name="hvdtrain-progress", daemon=True)
            self.writer.start()

    def _keep_writing(self) -> None:
        while True:
            time.sleep(self.period_s)
            self._write()

    def _write(self) -> None:
        current = self.current
        if current is None or current == self.written or self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(f"{current[0]} {current[1]}\n")
        os.replace(tmp, self.path)
        self.written = current
