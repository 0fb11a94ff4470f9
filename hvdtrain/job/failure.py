"""What went wrong in a job: per-rank reports, the root cause, stalled ranks (pure, plus file I/O)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hvdtrain.atomic import write_atomic
from hvdtrain.job.paths import RunPaths, claim_run_dir
from hvdtrain.job.progress import read_progress

_MISSING = re.compile(r"^\s*(?:\[[^\]]*\]<\w+>:)?\s*(\d+)(!?): \[(.*)\]\s*$")


@dataclass(frozen=True)
class RankReport:
    """``rank-N.json``, written by the rank's supervisor when it starts and when the rank ends."""

    rank: int
    host: str
    pid: int
    log: str
    running: bool = True
    exit_code: int | None = None
    signal: str | None = None
    ended_at: float | None = None
    last_lines: list[str] = field(default_factory=list)
    traceback: list[str] = field(default_factory=list)
    progress: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return not self.running and (self.exit_code != 0 or self.signal is not None)

    def describe(self) -> str:
        how = f"was killed by signal {self.signal}" if self.signal else f"exited with status {self.exit_code}"
        return f"rank {self.rank} on {self.host} (pid {self.pid}) {how}"


def classify_returncode(returncode: int) -> tuple[int, str | None]:
    """(exit status as a shell reports it, signal name or None) from a Popen returncode."""
    if returncode < 0:
        return 128 - returncode, signal.Signals(-returncode).name
    return returncode, None


def extract_traceback(lines: Sequence[str]) -> list[str]:
    """The last Python traceback in ``lines``, through its final exception line."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return []
    block = list(lines[starts[-1]:])
    for end in range(1, len(block)):
        if block[end] and not block[end].startswith((" ", "\t")):
            return block[:end + 1]
    return block


def parse_missing_ranks(lines: Sequence[str]) -> dict[int, list[str]]:
    """Ranks Horovod's stall inspector reported as never arriving, with the tensors they lack."""
    missing: dict[int, list[str]] = {}
    in_block = False
    for line in lines:
        if "Missing ranks:" in line:
            in_block = True
            continue
        match = _MISSING.match(line) if in_block else None
        if match:
            missing[int(match.group(1))] = [name.strip() for name in match.group(3).split(",")]
        else:
            in_block = False
    return missing


def write_report(paths: RunPaths, report: RankReport) -> None:
    write_atomic(paths.report(report.rank), json.dumps(asdict(report), indent=2) + "\n")


def read_reports(paths: RunPaths) -> list[RankReport]:
    """The ranks' reports; one not written by this user is not one of them, and is ignored."""
    reports = []
    for path in paths.reports():
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            reports.append(RankReport(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a report cut off by a kill: the rank shows up as silent
    return sorted(reports, key=lambda report: report.rank)


def read_log_lines(report: RankReport) -> list[str]:
    try:
        return Path(report.log).read_text(errors="replace").splitlines()
    except OSError:
        return []


def build_failure(reports: Sequence[RankReport], np: int, launcher_code: int,
                  missing: Mapping[int, list[str]]) -> dict[str, Any]:
    """``failure.json``: the first rank to fail is the root cause; the others followed it."""
    failed = sorted((r for r in reports if r.failed), key=lambda r: (r.ended_at or 0.0, r.rank))
    by_rank = {report.rank: report for report in reports}
    silent = [rank for rank in range(np) if rank not in by_rank or by_rank[rank].running]
    stalled = [{"rank": rank, "host": by_rank[rank].host if rank in by_rank else None, "waiting_for": names,
                "last_progress": by_rank[rank].progress if rank in by_rank else None}
               for rank, names in sorted(missing.items())]
    root = failed[0] if failed else None
    if stalled:
        cause = "stalled: rank(s) " + ", ".join(str(s["rank"]) for s in stalled) + " never reached a collective"
    elif root is not None:
        cause = root.describe()
    else:
        cause = f"the launcher exited with status {launcher_code} and no rank reported a failure"
    return {"exit_code": launcher_code, "cause": cause, "root_cause": asdict(root) if root else None,
            "stalled": stalled, "silent_ranks": silent, "ranks": [asdict(report) for report in reports]}


def render_failure(failure: Mapping[str, Any], paths: RunPaths) -> str:
    """The few lines a user reads first."""
    lines = [f"hvdtrain: job failed: {failure['cause']}"]
    for stalled in failure["stalled"]:
        progress = stalled["last_progress"] or {}
        last = f"epoch {progress['epoch']} step {progress['step']}" if progress else "unknown"
        lines.append(f"  rank {stalled['rank']} on {stalled['host']}: last finished {last}; "
                     f"others wait for {', '.join(stalled['waiting_for'])}")
    root = failure["root_cause"]
    if root and not failure["stalled"]:
        shown = root["traceback"] or root["last_lines"][-10:]
        lines.append(f"  last lines of {root['log']}:")
        lines += [f"    {line}" for line in shown]
    if failure["silent_ranks"]:
        lines.append(f"  no final report from rank(s) {failure['silent_ranks']} (killed with their supervisor?)")
    lines.append(f"  report: {paths.failure}")
    return "\n".join(printable(line) for line in lines)


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, carriage returns) shown as ``?``."""
    return "".join(char if char.isprintable() or char == "\t" else "?" for char in text)


def write_failure_report(paths: RunPaths, np: int, launcher_code: int) -> str:
    """After a failed job: gather the ranks' reports into ``failure.json``; return the summary."""
    # A supervisor killed with its rank wrote no final report: its rank's progress file still says
    # how far it got (a rank that stops on TERM only at its next step is killed before it does).
    reports = [report if report.progress is not None else replace(report, progress=read_progress(paths, report.rank))
               for report in read_reports(paths)]
    missing: dict[int, list[str]] = {}
    for report in reports:
        missing.update(parse_missing_ranks(read_log_lines(report)))
    failure = build_failure(reports, np, launcher_code, missing)
    claim_run_dir(paths.root, os.getuid(), fresh=False)
    write_atomic(paths.failure, json.dumps(failure, indent=2) + "\n")
    return render_failure(failure, paths)
