"""Shared fixtures: the installed CLI, golden files, and the rule that CI never skips."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
HVDTRAIN = str(BIN / "hvdtrain")
REPO = Path(__file__).parent.parent
GOLDEN = REPO / "tests" / "golden"
GPU_CHECKS_VARIABLE = "HVDTRAIN_GPU_CHECKS"


def pytest_configure(config: pytest.Config) -> None:
    """hvdtrain run keeps per-run logs under $HVDTRAIN_RUNS_DIR: keep the tests' out of the repo.
    Runs write metrics.jsonl only, unless a test asks for TensorBoard and MLflow (both installed by
    make; tests/test_own_script.py reads them back): a new MLflow store costs seconds per run."""
    os.environ.setdefault("HVDTRAIN_RUNS_DIR", tempfile.mkdtemp(prefix="hvdtrain-test-runs-"))
    os.environ.setdefault("HVDTRAIN_TRACKERS", "none")
    if os.environ.get(GPU_CHECKS_VARIABLE) != "1":
        # make test means the CPU: on a GPU node, no rank of the suite may pick a GPU by itself (--device
        # auto, hvdtrain.setup()). make test-gpu sets HVDTRAIN_GPU_CHECKS=1 and keeps the GPUs.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test is a failure: a missing dependency is installed by make."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") == "true" and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line("CI=true: skipped tests count as failures", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def hvdtrain(*args: str, timeout: float = 300, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``hvdtrain`` command and capture its output."""
    return subprocess.run([HVDTRAIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd or REPO, check=False)


@dataclass(frozen=True)
class CliResult:
    """What ``cli`` saw: the exit status and both streams, like a finished process."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None) -> CliResult:
    """``hvdtrain ARGS`` in this process: ``main(argv)`` under click's CliRunner isolation (its own
    stdin/stdout/stderr; ``env`` entries set, or unset when None) in ``cwd``. For everything that
    does not start ranks: bad input, --help, config precedence, dry runs."""
    from click.testing import CliRunner

    from hvdtrain.cli.main import main
    from hvdtrain.job.signals import FORWARDED_SIGNALS

    handlers = {signum: signal.getsignal(signum) for signum in FORWARDED_SIGNALS}  # train installs its own
    argv, path, modules = sys.argv, list(sys.path), set(sys.modules)
    with CliRunner().isolation(env=env) as (stdout, stderr, _), contextlib.chdir(cwd or REPO):
        sys.argv = ["hvdtrain", *args]
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv, sys.path[:] = argv, path
            here = str(Path.cwd())
            for name in set(sys.modules) - modules:  # a user's model module, from this test's directory
                if here != str(REPO) and str(getattr(sys.modules[name], "__file__", "") or "").startswith(here):
                    del sys.modules[name]
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
    return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())


def train_mpi(np: int, out: Path, *train_args: str, timeout: float = 600) -> dict[str, Any]:
    """``hvdtrain run -np N -- hvdtrain train ...``; returns summary.json, failing loudly on error."""
    done = hvdtrain("run", "-np", str(np), "--", HVDTRAIN, "train", "--out", str(out), *train_args,
                    timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


def check_golden(name: str, actual: str) -> None:
    """Compare with tests/golden/NAME; refresh with HVDTRAIN_UPDATE_GOLDEN=1 make test."""
    path = GOLDEN / name
    if os.environ.get("HVDTRAIN_UPDATE_GOLDEN") == "1":
        if os.environ.get("CI") == "true":
            pytest.fail("HVDTRAIN_UPDATE_GOLDEN=1 under CI=true: golden files are updated by hand, never by CI")
        path.write_text(actual)
        pytest.fail(f"wrote golden/{name}; nothing was checked: review it with git diff, then run the tests "
                    "without HVDTRAIN_UPDATE_GOLDEN")
    expected = path.read_text() if path.exists() else ""
    if actual != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), actual.splitlines(True),
                                            f"golden/{name}", "actual"))
        pytest.fail(f"{name} differs from its golden file:\n{diff}\n"
                    "If the change is intended: HVDTRAIN_UPDATE_GOLDEN=1 make test, then review git diff.")


@pytest.fixture(scope="session")
def two_hosts(tmp_path_factory):
    """Two ssh-reachable test hosts and one silent one (see tests/testhosts.py)."""
    from testhosts import test_hosts

    with test_hosts(tmp_path_factory.mktemp("hosts")) as hosts:
        yield hosts


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    """A real Slurm cluster (slurmctld + two slurmd) for this session, on ports of its own; the
    environment that points sbatch, scontrol and hvdtrain slurm at it."""
    state = tmp_path_factory.mktemp("slurm")
    script = str(REPO / "slurm" / "local-cluster.sh")
    env = {**os.environ, "HVDTRAIN_SLURM_PORT": "17817"}
    up = subprocess.run(["bash", script, "up", str(state)], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run(["bash", script, "down", str(state)], env=env, capture_output=True, timeout=120)
