"""The Horovod build: C++ standard, toolkit and NCCL discovery from fake trees, the plan, the cache key,
and our patches applied to the real sdist."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli, hvdtrain

from hvdtrain.errors import HvdtrainError
from hvdtrain.install.build import build_env, default_cache_dir, extract_sdist, fetch_sdist
from hvdtrain.install.patches import apply_patches, patch_files, patches_digest
from hvdtrain.install.plan import HOROVOD_VERSION, Probes, plan_build, render_plan
from hvdtrain.install.toolchain import (
    GIB,
    TORCH_FLOOR,
    cxx_standard_for_torch,
    find_cuda_home,
    find_nccl,
    parallel_jobs,
    parse_arch_flags,
    parse_compiler_id,
    parse_cuda_version,
    parse_nccl_version,
)

PATCHES = ["cxx-standard.patch", "disabled-logs-cost-nothing.patch", "gcc13-headers.patch", "gloo-cxx17.patch",
           "wait-without-spinning.patch", "within-node-shared-memory-allreduce.patch"]
NCCL_H = "#define NCCL_MAJOR 2\n#define NCCL_MINOR 30\n#define NCCL_PATCH 7\n#define NCCL_SUFFIX \"\"\n"


@pytest.mark.parametrize(("torch", "standard"), [
    ("2.6.0", 17), ("2.13.0+cpu", 17), ("2.13.0", 17), ("2.14.0", 20), ("2.14.1+cu130", 20), ("2.15.0", 20),
    ("2.16.0.dev20261201+cu130", 20), ("3.0.0", 20),
])
def test_cxx_standard_follows_torch(torch, standard):
    assert cxx_standard_for_torch(torch) == standard


def test_torch_older_than_2_6_is_refused_as_setup_cfg_says():
    with pytest.raises(HvdtrainError, match=r"older than 2\.6"):
        cxx_standard_for_torch("2.5.1")
    floor = ".".join(map(str, TORCH_FLOOR))
    assert f"torch>={floor}\n" in (Path(__file__).parent.parent / "setup.cfg").read_text()


@pytest.mark.parametrize(("text", "compiler"), [
    ("c++ (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright (C) 2022", "gcc-12.2.0"),
    ("g++ (GCC) 11.3.1 20220421 (Red Hat 11.3.1-2)\n", "gcc-11.3.1"),
    ("g++ (GCC) 14.2.0\n", "gcc-14.2.0"),
    ("clang version 14.0.6\nTarget: x86_64-pc-linux-gnu\n", "clang-14.0.6"),
    ("Ubuntu clang version 18.1.3 (1ubuntu1)\n", "clang-18.1.3"),
    ("", "cc"),
])
def test_parse_compiler_id(text, compiler):
    assert parse_compiler_id(text) == compiler


def test_parse_arch_flags_and_headers():
    assert parse_arch_flags("sm_75 sm_80 sm_86 sm_90 sm_100 sm_120") == (75, 80, 86, 90, 100, 120)
    assert parse_arch_flags("sm_90a compute_90 sm_80") == (80, 90)
    assert parse_arch_flags("") == ()
    assert parse_cuda_version("#define CUDA_VERSION 13000\n") == "13.0"
    assert parse_cuda_version("#define CUDA_VERSION 12080\n") == "12.8"
    assert parse_cuda_version("nothing") is None
    assert parse_nccl_version(NCCL_H) == "2.30.7"
    assert parse_nccl_version("#define NCCL_MAJOR 2\n") is None


@pytest.mark.parametrize(("cpus", "memory", "jobs"), [(2, 24 * GIB, 2), (64, 16 * GIB, 8), (4, GIB, 1), (1, 0, 1)])
def test_parallel_jobs_by_cores_and_memory(cpus, memory, jobs):
    assert parallel_jobs(cpus, memory) == jobs


def make_toolkit(root: Path, version: int = 13000) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "include" / "cuda.h").write_text(f"#define CUDA_VERSION {version}\n")
    return root


def test_find_cuda_home_in_order(tmp_path):
    home, path = make_toolkit(tmp_path / "home"), make_toolkit(tmp_path / "path")
    default = make_toolkit(tmp_path / "default")
    assert find_cuda_home({"CUDA_HOME": str(home), "CUDA_PATH": str(path)}, None, default) == home
    assert find_cuda_home({"CUDA_PATH": str(path)}, None, default) == path
    assert find_cuda_home({}, None, default) == default
    assert find_cuda_home({}, None, tmp_path / "absent") is None


def test_find_cuda_home_through_a_wrapper_script(tmp_path):
    """The nvcc on PATH is `exec /opt/cuda-13.0/bin/nvcc "$@"`: torch would guess its parent's parent."""
    real = make_toolkit(tmp_path / "opt" / "cuda-13.0")
    wrapper = tmp_path / "usr" / "local" / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    assert find_cuda_home({}, str(wrapper), tmp_path / "absent") == real
    link = tmp_path / "bin" / "nvcc"
    link.parent.mkdir()
    link.symlink_to(real / "bin" / "nvcc")
    assert find_cuda_home({}, str(link), tmp_path / "absent") == real
    (tmp_path / "plain").write_text("#!/bin/sh\necho not a wrapper\n")
    assert find_cuda_home({}, str(tmp_path / "plain"), tmp_path / "absent") is None


def test_a_cuda_home_that_is_no_toolkit_is_an_error(tmp_path):
    with pytest.raises(HvdtrainError, match=r"CUDA_HOME=.* is not a CUDA toolkit") as error:
        find_cuda_home({"CUDA_HOME": str(tmp_path)}, None, make_toolkit(tmp_path / "default"))
    assert "module load cuda" in error.value.hint and "--cpu-only" in error.value.hint


def make_nccl(root: Path, library: str) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "include" / "nccl.h").write_text(NCCL_H)
    (root / "lib" / library).write_text("")
    return root


def test_find_nccl_from_the_wheel_beside_torch(tmp_path):
    site = tmp_path / "site-packages"
    make_nccl(site / "nvidia" / "nccl", "libnccl.so.2")
    found = find_nccl({}, [tmp_path / "elsewhere", site])
    assert found is not None and found.version == "2.30.7" and found.needs_link
    assert found.library == site / "nvidia" / "nccl" / "lib" / "libnccl.so.2"
    assert find_nccl({}, [tmp_path / "elsewhere"]) is None


def test_find_nccl_from_horovod_nccl_home(tmp_path):
    home = make_nccl(tmp_path / "nccl", "libnccl.so")
    found = find_nccl({"HOROVOD_NCCL_HOME": str(home)}, [])
    assert found is not None and not found.needs_link and found.source == "HOROVOD_NCCL_HOME"
    with pytest.raises(HvdtrainError, match=r"has no include/nccl\.h"):
        find_nccl({"HOROVOD_NCCL_HOME": str(tmp_path / "empty")}, [])


TOOLS = {"mpicc": "/usr/bin/mpicc", "mpirun": "/usr/bin/mpirun", "cmake": "/usr/bin/cmake", "c++": "/usr/bin/c++",
         "patch": "/usr/bin/patch"}
CPU = Probes(torch="2.13.0+cpu", torch_cuda=None, torch_archs=(), python_abi="cp311", mpi="openmpi 4.1.4",
             tools=TOOLS, python_headers=True, compiler_version="c++ (Debian 12.2.0-14+deb12u1) 12.2.0",
             cuda_home=None, cuda_version=None, nccl=None, cpus=2, memory_bytes=24 * GIB, env={})


def cuda_probes(tmp_path: Path, **changes) -> Probes:
    nccl = find_nccl({}, [tmp_path])
    if nccl is None:
        nccl = find_nccl({}, [make_nccl(tmp_path / "nvidia" / "nccl", "libnccl.so.2").parent.parent])
    fields = {"torch": "2.14.1+cu130", "torch_cuda": "13.0", "torch_archs": (75, 80, 90), "cuda_home": tmp_path,
              "cuda_version": "13.0", "nccl": nccl, **changes}
    return dataclasses.replace(CPU, **fields)


def test_plan_for_cpu_torch():
    plan = plan_build(CPU, cpu_only=False, patches_digest="abc", nccl_link_dir=Path("/links"))
    assert plan.env["HVDTRAIN_CXX_STANDARD"] == "17" and plan.env["MAKEFLAGS"] == "-j2"
    assert plan.env["HOROVOD_WITH_PYTORCH"] == plan.env["HOROVOD_WITH_MPI"] == plan.env["HOROVOD_WITH_GLOO"] == "1"
    assert "HOROVOD_GPU_OPERATIONS" not in plan.env and plan.nccl is None
    assert plan.target.cache_key.startswith("horovod-0.28.1_torch-2.13.0+cpu_openmpi-4.1.4_cp311_gcc-12.2.0_cpu_")


def test_plan_for_cuda_torch_on_a_node_without_gpu(tmp_path):
    """The decision comes from torch.version.cuda, never from torch.cuda.is_available()."""
    plan = plan_build(cuda_probes(tmp_path), cpu_only=False, patches_digest="abc", nccl_link_dir=tmp_path / "links")
    assert plan.env["HVDTRAIN_CXX_STANDARD"] == "20"
    assert plan.env["HOROVOD_GPU_OPERATIONS"] == "NCCL" and plan.env["HOROVOD_NCCL_LINK"] == "SHARED"
    assert plan.env["CUDA_HOME"] == plan.env["HOROVOD_CUDA_HOME"] == str(tmp_path)
    assert plan.env["HOROVOD_NCCL_LIB"] == str(tmp_path / "links" / plan.target.cache_key / "lib")
    assert plan.env["HOROVOD_BUILD_CUDA_CC_LIST"] == "75,80,90"
    assert "_cuda-13.0_nccl-2.30.7_" in plan.target.cache_key
    assert "NCCL 2.30.7 with CUDA 13.0 for sm 75,80,90" in render_plan(plan, "build")


def test_plan_honours_the_users_arch_list_and_makeflags(tmp_path):
    probes = cuda_probes(tmp_path, env={"HOROVOD_BUILD_CUDA_CC_LIST": "90", "MAKEFLAGS": "-j1"})
    plan = plan_build(probes, cpu_only=False, patches_digest="abc", nccl_link_dir=tmp_path)
    assert plan.env["HOROVOD_BUILD_CUDA_CC_LIST"] == "90" and plan.env["MAKEFLAGS"] == "-j1"


def test_cpu_only_drops_inherited_gpu_variables(tmp_path):
    probes = cuda_probes(tmp_path, env={"HOROVOD_GPU_OPERATIONS": "NCCL", "PATH": "/bin"})
    plan = plan_build(probes, cpu_only=True, patches_digest="abc", nccl_link_dir=tmp_path)
    assert "HOROVOD_GPU_OPERATIONS" not in plan.env and plan.unset == ("HOROVOD_GPU_OPERATIONS",)
    assert plan.target.cache_key.split("_")[-2] == "cpu"
    env = build_env(plan, probes.env)
    assert "HOROVOD_GPU_OPERATIONS" not in env and env["PATH"] == "/bin"


@pytest.mark.parametrize(("changes", "problem", "fix"), [
    ({"cuda_home": None, "cuda_version": None}, "no CUDA toolkit was found", "`module load cuda`"),
    ({"cuda_version": "12.4"}, "is CUDA 12.4", "`module load cuda/13.0`"),
    ({"nccl": None}, "NCCL was not found", "HOROVOD_NCCL_HOME"),
    ({"torch": None}, "torch does not import", "pip install"),
    ({"mpi": None}, "mpirun was not found", "module load openmpi"),
    ({"tools": {**TOOLS, "cmake": None, "mpicc": None}}, "needs mpicc, cmake on PATH", "pip install cmake"),
    ({"python_headers": False}, "Python.h is missing", "python3-dev"),
    ({"torch": "2.5.1+cu118", "torch_cuda": "11.8"}, "older than 2.6", "torch>=2.6"),
])
def test_plan_refuses_with_the_fix(tmp_path, changes, problem, fix):
    with pytest.raises(HvdtrainError) as error:
        plan_build(cuda_probes(tmp_path, **changes), cpu_only=False, patches_digest="abc", nccl_link_dir=tmp_path)
    assert problem in error.value.problem and fix in error.value.hint
    assert "\n" not in str(error.value)


def test_cache_key_names_everything_the_binary_depends_on(tmp_path):
    base = cuda_probes(tmp_path)
    plan = plan_build(base, cpu_only=False, patches_digest="abc", nccl_link_dir=tmp_path)
    variants = [
        dataclasses.replace(base, torch="2.15.0+cu130"), dataclasses.replace(base, mpi="openmpi 5.0.3"),
        dataclasses.replace(base, compiler_version="g++ (GCC) 13.2.0"), dataclasses.replace(base, python_abi="cp312"),
        dataclasses.replace(base, cuda_version="13.1"), dataclasses.replace(base, torch_archs=(90,)),
        dataclasses.replace(base, nccl=dataclasses.replace(base.nccl, version="2.31.0")),
    ]
    keys = {plan_build(probes, False, "abc", tmp_path).target.cache_key for probes in variants}
    keys |= {plan_build(base, False, "def", tmp_path).target.cache_key,
             plan_build(base, True, "abc", tmp_path).target.cache_key}
    assert plan.target.cache_key not in keys and len(keys) == len(variants) + 2


def test_patches_digest_changes_with_a_patch(tmp_path):
    first = tmp_path / "a.patch"
    first.write_text("one")
    before = patches_digest([first])
    first.write_text("two")
    assert patches_digest([first]) != before


def test_every_patch_applies_to_the_real_sdist(tmp_path):
    """Download (or reuse from the cache) Horovod's sdist, apply our patches with patch -p1, check the result."""
    sdist = fetch_sdist(default_cache_dir(os.environ), tmp_path / "log", os.environ, {os.getuid()})
    source = extract_sdist(sdist, tmp_path)
    assert source == tmp_path / f"horovod-{HOROVOD_VERSION}"
    patches = patch_files()
    assert [path.name for path in patches] == PATCHES
    apply_patches(source, patches)
    top = (source / "CMakeLists.txt").read_text()
    assert "set(CMAKE_CXX_STANDARD $ENV{HVDTRAIN_CXX_STANDARD})" in top and "CMAKE_CXX_STANDARD 14" not in top
    assert "CMAKE_CXX_STANDARD 14" not in (source / "horovod" / "torch" / "CMakeLists.txt").read_text()
    assert "-std=c++17 -fPIC" in (source / "third_party" / "gloo" / "CMakeLists.txt").read_text()
    assert "#include <stdexcept>" in (source / "horovod" / "common" / "common.h").read_text()
    assert "#include <string>" in (source / "horovod" / "common" / "group_table.h").read_text()
    assert "HVDTRAIN_HOROVOD_WAIT" in (source / "horovod" / "common" / "common.h").read_text()
    assert "MPI_Iallreduce" in (source / "horovod" / "common" / "mpi" / "mpi_controller.cc").read_text()
    assert "WaitForWork" in (source / "horovod" / "common" / "operations.cc").read_text()
    assert "HVDTRAIN_HOROVOD_ALLREDUCE" in (source / "horovod" / "common" / "ops" / "mpi_operations.cc").read_text()
    for path in patches:
        assert path.read_text().startswith("hvdtrain: "), f"{path.name} must start by saying what it changes and why"
    with pytest.raises(HvdtrainError, match="does not apply"):
        apply_patches(source, patches[:1])


def test_log_levels_still_select_messages_after_our_log_patch(tmp_path):
    """disabled-logs-cost-nothing.patch skips building messages below HOROVOD_LOG_LEVEL: real ranks
    of the installed Horovod still print every trace message when asked, and none by default."""
    logs = {}
    for level in ("trace", None):
        out = tmp_path / str(level)
        env = {key: value for key, value in os.environ.items() if key != "HOROVOD_LOG_LEVEL"}
        env.update({"HOROVOD_LOG_LEVEL": level} if level else {})
        done = hvdtrain("run", "-np", "2", "--output-dir", str(out / "runs"), "--", sys.executable,
                        str(REPO / "tests" / "cycle_worker.py"), str(out), env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(json.loads((out / f"cycle.rank{rank}.json").read_text())["checked"] == 20 for rank in (0, 1))
        logs[level] = [(out / "runs" / f"rank-{rank}.log").read_text() for rank in (0, 1)]
    # every one of a rank's 21 all-reduces logs its round at trace level, from the background thread
    assert all(log.count("Performing allreduce.cycle") >= 21 for log in logs["trace"]), logs["trace"][0][-2000:]
    assert all("Performing" not in log and "] [T " not in log for log in logs[None]), logs[None][0][-2000:]


def test_build_horovod_cli_dry_run_and_a_missing_tool(tmp_path):
    """The real command: --dry-run shows the plan; without cmake on PATH, one line names the fix, exit 2."""
    done = cli("build-horovod", "--dry-run", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cache key: horovod-0.28.1_torch-" in done.stdout and "HVDTRAIN_CXX_STANDARD=" in done.stdout
    assert not (tmp_path / "cache").exists()
    bare = tmp_path / "bin"
    bare.mkdir()
    for folder in os.environ["PATH"].split(":"):
        for program in Path(folder).glob("*") if os.path.isdir(folder) else ():
            if program.name != "cmake" and not (bare / program.name).exists():
                (bare / program.name).symlink_to(program)
    done = cli("build-horovod", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, env={"PATH": str(bare)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "building Horovod needs cmake on PATH" in done.stderr and "pip install cmake" in done.stderr
