import pytest

from hvdtrain.detect import parse_mpi_version
from hvdtrain.doctor import Facts, diagnose, parse_maps_libmpi
from hvdtrain.horovod_build import SOURCE_PATCHES, BuildTarget, build_env, choose_gpu_operations, patch_source


@pytest.mark.parametrize(("text", "flavor", "version"), [
    ("mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/\n", "openmpi", "4.1.4"),
    ("HYDRA build details:\n    Version:                                 4.0.2\n", "mpich", "4.0.2"),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.6 Build 20220227 (id: 28877f3f32)\n", "intel", "2021.6"),
    ("something else\n", "unknown", ""),
])
def test_parse_mpi_version(text, flavor, version):
    info = parse_mpi_version(text)
    assert (info.flavor, info.version) == (flavor, version)


def test_parse_maps_libmpi():
    maps = ("7f1c2a000000-7f1c2a021000 r--p 00000000 fe:01 1234  /usr/lib/x86_64-linux-gnu/libc.so.6\n"
            "7f1c2b000000-7f1c2b0a0000 r-xp 00000000 fe:01 5678  /usr/lib/x86_64-linux-gnu/libmpi.so.40.30.4\n"
            "7f1c2c000000-7f1c2c001000 r--p 00000000 fe:01 9012  /usr/lib/x86_64-linux-gnu/libmpi_cxx.so.40\n")
    assert parse_maps_libmpi(maps) == "/usr/lib/x86_64-linux-gnu/libmpi.so.40.30.4"
    assert parse_maps_libmpi(maps.splitlines()[0]) is None


def test_patch_source_moves_to_cxx17_once():
    name, before, after = SOURCE_PATCHES[0]
    text = f"project(horovod)\n{before}\n"
    patched = patch_source(text, name, before, after)
    assert patched == f"project(horovod)\n{after}\n"
    assert patch_source(patched, name, before, after) == patched
    with pytest.raises(RuntimeError, match="expected"):
        patch_source("nothing here", name, before, after)
    assert {after for _, _, after in SOURCE_PATCHES} == {"set(CMAKE_CXX_STANDARD 17)", "-std=c++17"}


def test_build_env_selects_frameworks_and_gpu_operations():
    cpu = BuildTarget("0.28.1", "2.13.0+cpu", "openmpi 4.1.4", "cp311", choose_gpu_operations(False, None))
    gpu = BuildTarget("0.28.1", "2.13.0", "openmpi 4.1.4", "cp311", choose_gpu_operations(True, "/nccl"))
    env = build_env(cpu, None, {"PATH": "/bin"})
    assert env["HOROVOD_WITH_PYTORCH"] == env["HOROVOD_WITH_MPI"] == env["HOROVOD_WITH_GLOO"] == "1"
    assert env["HOROVOD_WITHOUT_TENSORFLOW"] == "1" and "HOROVOD_GPU_OPERATIONS" not in env
    assert build_env(gpu, "/nccl", {})["HOROVOD_GPU_OPERATIONS"] == "NCCL"
    assert cpu.cache_key == "horovod-0.28.1_torch-2.13.0+cpu_openmpi-4.1.4_cp311_cpu"
    assert gpu.cache_key.endswith("_nccl") and choose_gpu_operations(True, None) == ""


HEALTHY = Facts(python="3.11.7", torch="2.13.0+cpu", horovod="0.28.1", horovod_error=None, mpi_built=True,
                gloo_built=True, nccl_built=False, torch_ops=True, built_against_torch="2.13.0+cpu",
                built_against_mpi="openmpi 4.1.4", gpu_operations="", compiler="g++ 12",
                linked_mpi_library="/lib/libmpi.so.40", mpirun="openmpi 4.1.4", mpirun_banner="mpirun",
                cpu_count=2, cuda_available=False, cuda_device_count=0)


@pytest.mark.parametrize(("changes", "problem"), [
    ({"horovod": None}, "Horovod is not installed"),
    ({"torch_ops": False, "horovod_error": "ImportError: undefined symbol"}, "does not load (ImportError"),
    ({"mpi_built": False, "gloo_built": False}, "neither MPI nor Gloo"),
    ({"built_against_torch": "2.12.0"}, "built against torch 2.12.0 but 2.13.0+cpu is installed: run `make"),
    ({"mpirun": None}, "mpirun was not found"),
    ({"mpirun": "mpich 4.0.2"}, "built against openmpi 4.1.4 but mpirun on PATH is mpich 4.0.2"),
    ({"cuda_available": True, "cuda_device_count": 4}, "4 GPU(s) but Horovod was built without NCCL"),
])
def test_diagnose_names_problem_and_fix(changes, problem):
    facts = Facts(**{**HEALTHY.__dict__, **changes})
    problems = diagnose(facts)
    assert len(problems) == 1 and problem in problems[0]


def test_diagnose_healthy():
    assert diagnose(HEALTHY) == []
