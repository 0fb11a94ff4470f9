"""Reference pages generated from the code's own tables (``docs/gen_reference.py`` writes them
into the site; ``tests/test_docs.py`` checks that every variable the code names is in them)."""

from __future__ import annotations

import html
import shlex
from typing import Any

from hvdtrain.install.build import CACHE_VARIABLE
from hvdtrain.job.cores import BIND_VARIABLE
from hvdtrain.job.paths import RUN_DIR_VARIABLE, RUNS_DIR_VARIABLE
from hvdtrain.job.signals import PREEMPTED_EXIT
from hvdtrain.launch.plan import ENV_REASONS, FORWARDED_ENV, NOT_FORWARDED, SWITCHES
from hvdtrain.run.preempt import PREEMPT_SIGNAL_VARIABLE
from hvdtrain.run.trackers import TRACKERS_VARIABLE

# What hvdtrain reads from the environment itself, beyond the launch plan's tables.
READ_ENV = {
    CACHE_VARIABLE: "`build-horovod`'s cache of wheels and the Horovod sdist (default `~/.cache/hvdtrain`)",
    RUNS_DIR_VARIABLE: "where `hvdtrain run` makes run folders (default `hvdtrain-runs`)",
    RUN_DIR_VARIABLE: "set by each rank's supervisor: the run folder the rank writes its progress to",
    BIND_VARIABLE: "1: each rank binds itself to its share of the node's cores, near its GPU (`hvdtrain run` "
                   "sets it); 0: placement is left to the scheduler",
    PREEMPT_SIGNAL_VARIABLE: "the signal `hvdtrain.Run` and `hvdtrain train` stop on (the sbatch templates export "
                             "`--signal`); default USR1, TERM always",
    TRACKERS_VARIABLE: "which metric trackers `hvdtrain.Run` writes besides metrics.jsonl: `tensorboard`, "
                       "`mlflow`, both (comma-separated), or `none`; default: those installed",
    "HVDTRAIN_CXX_STANDARD": "set by `build-horovod` for Horovod's CMake: C++17 below torch 2.14, C++20 from 2.14",
    "MLFLOW_TRACKING_URI": "MLflow's store for `hvdtrain.Run` (default `sqlite:///RUN/mlflow.db`)",
    "MLFLOW_EXPERIMENT_NAME": "MLflow's experiment (default `hvdtrain`)",
    "SLURM_JOB_ID, SLURM_JOB_NODELIST, SLURM_TASKS_PER_NODE, SLURM_NTASKS": "the allocation `hvdtrain run` and "
                                                                            "`hostfile from-slurm` start ranks on",
}
# Exit statuses of hvdtrain's commands (a job's own status passes through `hvdtrain run`).
EXIT_CODES = {
    "0": "success",
    "1": "`doctor` or `slurm render --lint` found a problem; a rank failed with an error (its traceback is "
         "printed as the root cause)",
    "2": "bad input: one line naming the problem and its fix, nothing started",
    str(PREEMPTED_EXIT): "preempted: every rank saved its place on the stop signal (EX_TEMPFAIL); run the same "
                         "command again to resume",
    "128 + N": "a rank was killed by signal N (137: SIGKILL, often the out-of-memory killer)",
}


def _table(header: tuple[str, str], rows: dict[str, str]) -> str:
    return "".join([f"| {header[0]} | {header[1]} |\n|---|---|\n",
                    *(f"| `{name}` | {why} |\n" if not name[0].isdigit() else f"| {name} | {why} |\n"
                      for name, why in rows.items())])


def environment_page() -> str:
    switches = {switch.variable: f"{switch.why} (`{switch.option}`; `{switch.upstream}` restores upstream's)"
                for switch in SWITCHES}
    return "\n".join([
        "# Environment variables\n",
        "Generated from the code's tables (`hvdtrain/reference.py`, `hvdtrain/launch/plan.py`).\n",
        "## Read by hvdtrain\n", _table(("variable", "meaning"), READ_ENV),
        "## Switches of hvdtrain's Horovod patches\n", _table(("variable", "meaning"), switches),
        "## Set in every rank by `hvdtrain run`\n", _table(("variable", "why"), ENV_REASONS),
        "## Forwarded to every rank, with the caller's value, when set\n", _table(("pattern", "why"), FORWARDED_ENV),
        f"Never forwarded: {', '.join(f'`{name}`' for name in NOT_FORWARDED)} (each node's scheduler sets its own). "
        "`-x NAME`, `-x PREFIX_*` and `-x NAME=VALUE` add your own.\n"])


def bad_input_page(cases: list[dict[str, Any]]) -> str:
    """Every bad-input case the tests run (tests/data/bad_inputs.yaml): the command and the message
    in its one line on stderr (exit 2)."""
    rows = "".join(f"| <code>{_html(shlex.join(['hvdtrain', *map(str, case['args'])]))}</code> | "
                   f"{_html(str(case['message']))} |\n" for case in cases)
    return "\n".join(["# Bad input\n", f"The {len(cases)} cases `make test` runs (`tests/data/bad_inputs.yaml`): each "
                      "exits 2 with one line on stderr containing the message, writes nothing, and shows no "
                      "traceback.\n", "| command | the line contains |\n|---|---|\n" + rows])


def _html(text: str) -> str:
    """Table-cell text: control characters as escapes, HTML escaped, no column separator."""
    return html.escape(text.encode("unicode_escape").decode()).replace("|", "&#124;")


def exit_codes_page() -> str:
    return "\n".join(["# Exit codes\n", "Generated from `hvdtrain/reference.py`.\n",
                      _table(("status", "meaning"), EXIT_CODES)])
