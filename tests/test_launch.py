import dataclasses
import os
import re
import shlex
from pathlib import Path

import pytest
from conftest import HVDTRAIN, check_golden, cli, hvdtrain

from hvdtrain.errors import HvdtrainError
from hvdtrain.hosts.host import parse_host_list
from hvdtrain.launch.choose import LauncherChoice, build_parts, choose_launcher, render_explanation
from hvdtrain.launch.detect import MpiInfo, parse_srun_mpi_list
from hvdtrain.launch.plan import (
    ALLREDUCE,
    SWITCHES,
    WAIT,
    ElasticSettings,
    build_plan,
    flatten,
    horovod_tuning,
    launch_env,
    parse_env_flags,
    select_env_names,
    stall_settings,
    supervisor_prefix,
    switch_flags,
)
from hvdtrain.launch.ssh import SshSettings
from hvdtrain.slurm.nodelist import slurm_job

HVDTRAIN_PYTHON = str(Path(HVDTRAIN).parent / "python")
ENV = {"PATH": "/usr/bin", "HOME": "/root", "HOROVOD_FUSION_THRESHOLD": "1", "PYTHONPATH": "/x",
       "SECRET": "no", "OMP_NUM_THREADS": "1", "NCCL_SOCKET_IFNAME": "ib0", "NCCL_DEBUG": "WARN", "UCX_TLS": "rc,sm",
       "CUDA_VISIBLE_DEVICES": "0,1", "MYPREFIX_A": "1", "MYPREFIX_B": "2"}
OPENMPI = MpiInfo("openmpi", "4.1.4", "mpirun (Open MPI) 4.1.4")
SRUN_LIST = ("MPI plugin types are...\n\tnone\n\tcray_shasta\n\tpmi2\n\tpmix\n"
             "specific pmix plugin versions available: pmix_v4\n")


def _plans():
    simple = build_plan(2, None, ("hvdtrain", "train", "--epochs", "1"), ENV, uid=0, stall_timeout=0)
    full = build_plan(4, parse_host_list("node1:2,node2:2"), ("python", "my script.py"), ENV, uid=1000,
                      env_flags=("MY_VAR", "NCCL_DEBUG=INFO", "MYPREFIX_*"), tag_output=True, stall_timeout=120,
                      supervisor=supervisor_prefix("/venv/bin/hvdtrain", Path("/logs/run 1")),
                      timeline=Path("/tmp/tl.json"), launcher_args=("--mca", "btl", "^openib"),
                      ssh=SshSettings(2222, Path("/keys/id"), ("StrictHostKeyChecking=accept-new",)),
                      network_interface="ib0")
    return simple, full


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun", "srun", "mpiexec"])
def test_launcher_argv_golden(launcher):
    choice = LauncherChoice(launcher, "test", "pmix" if launcher == "srun" else "")
    plans = _plans()
    if launcher == "horovodrun":  # it refuses ssh options (test_horovodrun_refuses_ssh_options_it_would_drop)
        plans = tuple(dataclasses.replace(plan, ssh=dataclasses.replace(plan.ssh, options=())) for plan in plans)
    text = "".join(shlex.join(flatten(build_parts(plan, choice))) + "\n" for plan in plans)
    check_golden(f"{launcher}_argv.txt", text)


@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun", "srun", "mpiexec"])
def test_network_interface_reaches_nccl_and_gloo_on_every_launcher(launcher):
    plan = build_plan(2, parse_host_list("node1:1,node2:1"), ("python", "x.py"), {"PATH": "/usr/bin"}, uid=1000,
                      network_interface="ib0")
    argv = flatten(build_parts(plan, LauncherChoice(launcher, "test", "pmix" if launcher == "srun" else "")))
    joined = " ".join(argv).replace("-genv NCCL_SOCKET_IFNAME ", "NCCL_SOCKET_IFNAME=").replace(
        "-genv GLOO_SOCKET_IFNAME ", "GLOO_SOCKET_IFNAME=")  # mpiexec sets them as -genv NAME VALUE
    assert "NCCL_SOCKET_IFNAME=ib0" in joined and "GLOO_SOCKET_IFNAME=ib0" in joined
    mine = build_plan(2, None, ("x",), {"PATH": "/usr/bin", "NCCL_SOCKET_IFNAME": "eth1"}, uid=1000,
                      network_interface="ib0")
    assert ("NCCL_SOCKET_IFNAME", "ib0") not in mine.all_env_values  # the caller's own setting goes as it is
    assert "NCCL_SOCKET_IFNAME" in mine.env_names


def test_forwarded_prefixes_and_what_is_never_forwarded():
    plan = build_plan(2, None, ("x",), {**ENV, "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "FI_PROVIDER": "efa"},
                      uid=1000, env_flags=("MYPREFIX_*",))
    assert {"NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "UCX_TLS", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "FI_PROVIDER",
            "MYPREFIX_A", "MYPREFIX_B", "OMP_NUM_THREADS"} <= set(plan.env_names)
    assert "CUDA_VISIBLE_DEVICES" not in plan.env_names and "SECRET" not in plan.env_names
    lines = render_explanation(build_parts(plan, LauncherChoice("mpirun", "test")), LauncherChoice("mpirun", "t"))
    assert re.search(r"-x UCX_TLS +# forward: UCX's transports", lines)
    assert re.search(r"-x MYPREFIX_A +# forward: you asked for it", lines)


@pytest.mark.parametrize("interface", ["ib0;id", "a b", "x" * 16, ""])
def test_a_network_interface_must_be_an_interface_name(interface):
    with pytest.raises(HvdtrainError, match="is not a network interface name"):
        build_plan(2, None, ("x",), ENV, uid=1000, network_interface=interface)


def test_explain_gives_every_argument_a_reason():
    choice = LauncherChoice("mpirun", "test")
    parts = build_parts(_plans()[1], choice)
    lines = render_explanation(parts, choice).splitlines()
    assert lines[0] == "# launcher: mpirun (test)" and len(lines) == len(parts) + 1
    assert all(line.split("  # ", 1)[1].strip() for line in lines[1:])  # a reason, not just its marker


def test_select_env_names_forwards_only_what_ranks_need():
    assert select_env_names(ENV) == ("HOROVOD_FUSION_THRESHOLD", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "OMP_NUM_THREADS",
                                     "PATH", "PYTHONPATH", "UCX_TLS")  # not HOME, SECRET, CUDA_VISIBLE_DEVICES


@pytest.mark.parametrize(("flags", "names", "values"), [
    (["A"], ("A",), ()), (["A=1", "B"], ("B",), (("A", "1"),)), (["X=a=b"], (), (("X", "a=b"),)),
    (["V=$(touch x); rm"], (), (("V", "$(touch x); rm"),)),
])
def test_parse_env_flags(flags, names, values):
    assert parse_env_flags(flags) == (names, values)


@pytest.mark.parametrize("flag", ["1A", "A-B=1", "$(x)", "", "A B"])
def test_parse_env_flags_rejects_bad_names(flag):
    with pytest.raises(HvdtrainError, match="not an environment variable name"):
        parse_env_flags([flag])


def test_parse_srun_mpi_list():
    assert parse_srun_mpi_list(SRUN_LIST) == ("none", "cray_shasta", "pmi2", "pmix")


@pytest.mark.parametrize(("requested", "env", "plugins", "mpi", "name"), [
    ("auto", {}, None, OPENMPI, "mpirun"),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}, ("none", "pmi2", "pmix"), OPENMPI, "srun"),
    ("auto", {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}, ("none", "pmi2"), OPENMPI, "mpirun"),
    ("auto", {}, None, MpiInfo("mpich", "4.0", "HYDRA"), "mpiexec"),
    ("horovodrun", {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]"}, ("pmix",), OPENMPI, "horovodrun"),
    ("srun", {}, ("pmix_v4",), None, "srun"),
])
def test_choose_launcher(requested, env, plugins, mpi, name):
    choice = choose_launcher(requested, slurm_job(env), plugins, mpi)
    assert choice.name == name and choice.why


def test_choose_srun_without_pmix_is_an_error():
    with pytest.raises(HvdtrainError, match="srun offers no PMIx plugin \\(none, pmi2\\)"):
        choose_launcher("srun", None, ("none", "pmi2"), OPENMPI)


@pytest.mark.parametrize(("path", "expected"), [
    ("/usr/bin", "/venv/bin:/usr/bin"), ("/venv/bin:/usr/bin", "/venv/bin:/usr/bin"), ("", "/venv/bin"),
])
def test_launch_env_puts_this_install_first(path, expected):
    env = launch_env({"PATH": path, "HOME": "/root"}, "/venv/bin/python")
    assert env == {"PATH": expected, "HOME": "/root"}


def test_oversubscribe_lets_np_exceed_the_slots():
    plan = build_plan(4, parse_host_list("a:1"), ("true",), ENV, uid=1000, oversubscribe=True)
    assert "--oversubscribe" in flatten(build_parts(plan, LauncherChoice("mpirun", "test")))
    assert "--overcommit" in flatten(build_parts(plan, LauncherChoice("srun", "test", "pmix")))


@pytest.mark.parametrize(("timeout", "expected"), [
    (0, ()), (10, (("HOROVOD_STALL_CHECK_TIME_SECONDS", "5"), ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "10"))),
    (600, (("HOROVOD_STALL_CHECK_TIME_SECONDS", "60"), ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "600"))),
    (1, (("HOROVOD_STALL_CHECK_TIME_SECONDS", "1"), ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "1"))),
])
def test_stall_settings(timeout, expected):
    assert stall_settings(timeout) == expected


def test_elastic_horovodrun_plan():
    elastic = ElasticSettings(1, 4, Path("/jobs/discover.sh"))
    plan = build_plan(2, None, ("hvdtrain", "train", "--elastic"), ENV, uid=1000, elastic=elastic)
    choice = choose_launcher("auto", {}, None, OPENMPI, elastic=True)
    argv = flatten(build_parts(plan, choice))
    assert choice.name == "horovodrun" and "-H" not in argv
    assert argv[argv.index("--min-np"):argv.index("--min-np") + 6] == [
        "--min-np", "1", "--max-np", "4", "--host-discovery-script", "/jobs/discover.sh"]


def test_horovod_tuning_settings():
    mine = {"HVDTRAIN_HOROVOD_WAIT": "spin", "HVDTRAIN_HOROVOD_ALLREDUCE": "mpi"}  # the user's own: tested below
    assert horovod_tuning(None, None, False, mine) == ("HOROVOD_CYCLE_TIME=0.1",)  # hvdtrain's default
    assert horovod_tuning(None, None, False, {"HOROVOD_CYCLE_TIME": "2", **mine}) == ()  # the user's setting wins
    assert horovod_tuning(None, None, True, mine) == ("HOROVOD_AUTOTUNE=1",)  # Horovod tunes the cycle time
    assert horovod_tuning(64, 0.5, True, mine) == ("HOROVOD_FUSION_THRESHOLD=67108864", "HOROVOD_CYCLE_TIME=0.5",
                                                   "HOROVOD_AUTOTUNE=1")
    done = cli("run", "-np", "2", "--cycle-time-ms", "0.2", "--dry-run", "--", "true")
    assert " -x HOROVOD_CYCLE_TIME=0.2 " in done.stdout
    default = cli("run", "-np", "2", "--dry-run", "--", "true")
    assert " -x HOROVOD_CYCLE_TIME=0.1 " in default.stdout


@pytest.mark.parametrize(("wait", "env", "expected"), [
    (None, {}, ("HVDTRAIN_HOROVOD_WAIT=sleep",)),  # hvdtrain's default: idle threads sleep
    (None, {"HVDTRAIN_HOROVOD_WAIT": "spin"}, ()),  # exported by the user: forwarded as it is
    ("spin", {}, ("HVDTRAIN_HOROVOD_WAIT=spin",)),  # upstream's busy waiting, for comparison
    ("sleep", {"HVDTRAIN_HOROVOD_WAIT": "spin"}, ("HVDTRAIN_HOROVOD_WAIT=sleep",)),  # the flag wins
])
def test_horovod_wait_mode(wait, env, expected):
    settings = horovod_tuning(None, None, False, {"HOROVOD_CYCLE_TIME": "1", "HVDTRAIN_HOROVOD_ALLREDUCE": "mpi",
                                                  **env}, wait)
    assert settings == expected


@pytest.mark.parametrize(("allreduce", "env", "expected"), [
    (None, {}, ("HVDTRAIN_HOROVOD_ALLREDUCE=shm",)),  # hvdtrain's default: shared memory within a node
    (None, {"HVDTRAIN_HOROVOD_ALLREDUCE": "mpi"}, ()),  # exported by the user: forwarded as it is
    ("mpi", {}, ("HVDTRAIN_HOROVOD_ALLREDUCE=mpi",)),  # upstream's MPI_Allreduce, for comparison
    ("shm", {"HVDTRAIN_HOROVOD_ALLREDUCE": "mpi"}, ("HVDTRAIN_HOROVOD_ALLREDUCE=shm",)),  # the flag wins
])
def test_horovod_allreduce_mode(allreduce, env, expected):
    settings = horovod_tuning(None, None, False, {"HOROVOD_CYCLE_TIME": "1", "HVDTRAIN_HOROVOD_WAIT": "spin",
                                                  **env}, allreduce=allreduce)
    assert settings == expected


def test_switch_flags_set_every_switch():
    assert switch_flags() == ("--horovod-wait", "sleep", "--horovod-allreduce", "shm")
    assert switch_flags(SWITCHES) == ("--horovod-wait", "spin", "--horovod-allreduce", "mpi")
    assert switch_flags((ALLREDUCE,)) == ("--horovod-wait", "sleep", "--horovod-allreduce", "mpi")


@pytest.mark.parametrize(("switch", "why"), [
    (WAIT, "idle Horovod threads sleep instead of busy-polling"),
    (ALLREDUCE, "sum float gradients through shared memory instead of MPI_Allreduce"),
], ids=["wait", "allreduce"])
def test_explain_says_why_each_switch_is_set(switch, why):
    done = cli("run", "-np", "2", "--dry-run", "--explain", "--", "true")
    (line,) = [line for line in done.stdout.splitlines() if f"{switch.variable}={switch.default}" in line]
    assert why in line
    upstream = cli("run", "-np", "2", switch.option, switch.upstream, "--dry-run", "--", "true")
    assert f" -x {switch.variable}={switch.upstream} " in upstream.stdout
    bad = cli("run", "-np", "2", switch.option, "nccl", "--dry-run", "--", "true")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_plan_needs_a_command():
    with pytest.raises(HvdtrainError, match="no command"):
        build_plan(2, None, (), ENV, uid=0)


def test_plan_uses_the_slurm_allocation_when_no_hosts_are_given():
    slurm = parse_host_list("node1:2,node2:2")
    plan = build_plan(4, None, ("true",), ENV, uid=0, slurm_hosts=slurm)
    assert plan.hosts == slurm and plan.hosts_from == "slurm"
    assert build_plan(1, parse_host_list("a:1"), ("true",), ENV, uid=0, slurm_hosts=slurm).hosts_from == "user"


def test_run_dry_run_prints_the_exact_command():
    done = cli("run", "-np", "2", "--dry-run", "--", "echo", "a b;c")
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout)
    assert argv[:7] == ["mpirun", "-np", "2", "-H", "localhost:2", "--bind-to", "none"]
    assert argv[-2:] == ["echo", "a b;c"]
    assert argv[argv.index("--mca"):argv.index("--mca") + 3] == ["--mca", "mpi_yield_when_idle", "1"]
    explained = cli("run", "-np", "2", "--dry-run", "--explain", "--", "true").stdout
    assert explained.startswith("# launcher: mpirun (Open MPI's mpirun") and "busy-polling" in explained


def test_user_values_never_reach_a_shell(tmp_path):
    canary = tmp_path / "canary"
    payload = f"$(touch {canary}); touch {canary} `touch {canary}` ' \" \n"
    out = tmp_path / "out $(touch canary)"
    done = hvdtrain("run", "-np", "2", "-x", f"EVIL={payload}", "--output-dir", str(out), "--tag-output", "--",
                    HVDTRAIN_PYTHON, "-c", "import os; print(repr(os.environ['EVIL']))")
    assert done.returncode == 0, done.stderr
    assert not canary.exists() and not (Path.cwd() / "canary").exists()
    logs = sorted(out.glob("rank-*.log"))
    assert len(logs) == 2 and all(repr(payload) in log.read_text() for log in logs)
    rejected = cli("run", "-np", "1", "-H", f"a$(touch {canary}):1", "--", "true")
    assert rejected.returncode == 2 and not canary.exists()


# One rank: every process's /proc/PID/cmdline (which every user of the node can read) into
# OUT/cmdlines.RANK, a line each, then the values of the variables named after OUT.
CMDLINES = """
import os, sys
rank = os.environ.get("HOROVOD_RANK") or os.environ["OMPI_COMM_WORLD_RANK"]
lines = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        lines.append(open(f"/proc/{pid}/cmdline", "rb").read())
    except OSError:
        continue
open(f"{sys.argv[1]}/cmdlines.{rank}", "wb").write(b"\\n".join(lines))
print("env", *(os.environ.get(name) for name in sys.argv[2:]))
"""


def _cmdlines(out):
    return [line for rank in (0, 1) for line in (out / f"cmdlines.{rank}").read_bytes().split(b"\n")]


@pytest.mark.mpi
def test_a_value_given_with_x_reaches_the_ranks_but_no_command_line(tmp_path):
    """-x TOKEN=...: every rank sees it; no process hvdtrain run starts (mpirun, orted, the
    supervisors, the ranks) has it in its command line."""
    secret = f"tok-{os.getpid()}-{tmp_path.name}"
    done = hvdtrain("run", "-np", "2", "-x", f"TOKEN={secret}", "--output-dir", str(tmp_path / "runs"), "--",
                    HVDTRAIN_PYTHON, "-c", CMDLINES, str(tmp_path), "TOKEN")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("env")] == [f"env {secret}"] * 2
    started = [line for line in _cmdlines(tmp_path) if b"\0run\0" not in line]  # not hvdtrain run: the user typed it
    assert any(b"mpirun" in line for line in started) and not any(secret.encode() in line for line in started)
    dry = cli("run", "-np", "2", "-x", f"TOKEN={secret}", "--dry-run", "--", "true")
    assert secret not in dry.stdout and " -x TOKEN " in dry.stdout


def test_horovodrun_refuses_ssh_options_it_would_drop():
    done = cli("run", "-np", "2", "-H", "a:1,b:1", "--launcher", "horovodrun", "--ssh-option",
               "ProxyJump=gateway", "--dry-run", "--", "true")
    assert done.returncode == 2 and "horovodrun cannot pass --ssh-option" in done.stderr, done.stderr


@pytest.mark.mpi
def test_horovodrun_gets_no_variable_it_does_not_forward(tmp_path):
    """horovodrun writes its whole environment into each rank's command line: a secret in the
    caller's environment (not forwarded) must be in no command line of the job, nor reach the ranks."""
    secret = f"key-{os.getpid()}-{tmp_path.name}"
    done = hvdtrain("run", "-np", "2", "--launcher", "horovodrun", "--output-dir", str(tmp_path / "runs"), "--",
                    HVDTRAIN_PYTHON, "-c", CMDLINES, str(tmp_path), "AWS_SECRET_ACCESS_KEY", "NCCL_DEBUG",
                    env={**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "NCCL_DEBUG": "WARN"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    printed = [line.split(":", 1)[1] for line in done.stdout.splitlines() if line.endswith(":env None WARN")]
    assert printed == ["env None WARN"] * 2, done.stdout  # horovodrun prefixes [rank]<stdout>:
    seen = _cmdlines(tmp_path)
    assert any(b"NCCL_DEBUG=WARN" in line for line in seen)  # horovodrun's K=V command lines were among those read
    assert not any(secret.encode() in line for line in seen)


def test_golden_updates_refuse_to_run_under_ci(monkeypatch):
    golden = Path(__file__).parent / "golden" / "mpirun_argv.txt"
    before = golden.read_text()
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HVDTRAIN_UPDATE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="never by CI"):
        check_golden("mpirun_argv.txt", "anything")
    assert golden.read_text() == before
