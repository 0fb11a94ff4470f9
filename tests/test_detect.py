import pytest

from hvdtrain.install.doctor import Facts, advise, diagnose, parse_maps_libmpi
from hvdtrain.launch.detect import parse_mpi_version


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


HEALTHY = Facts(python="3.11.7", torch="2.13.0+cpu", torch_cuda=None, horovod="0.28.1", horovod_error=None,
                mpi_built=True, gloo_built=True, nccl_built=False, torch_ops=True, built_against_torch="2.13.0+cpu",
                built_against_mpi="openmpi 4.1.4", built_against_torch_cuda=None, built_against_cuda=None,
                nccl_version=None, gpu_operations="", compiler="gcc-12.2.0", linked_mpi_library="/lib/libmpi.so.40",
                mpirun="openmpi 4.1.4", mpirun_banner="mpirun", cpu_count=2, libcuda=False, cuda_available=False,
                cuda_device_count=0, local_ranks=[], network_interfaces=["eth0", "lo"])
NCCL_BUILD = {"torch": "2.14.1+cu130", "torch_cuda": "13.0", "built_against_torch": "2.14.1+cu130",
              "built_against_torch_cuda": "13.0", "built_against_cuda": "13.0", "nccl_version": "2.30.7",
              "nccl_built": True, "gpu_operations": "NCCL"}


@pytest.mark.parametrize(("changes", "problem"), [
    ({"horovod": None}, "Horovod is not installed"),
    ({"torch_ops": False, "horovod_error": "ImportError: undefined symbol"}, "does not load (ImportError"),
    ({"mpi_built": False, "gloo_built": False}, "neither MPI nor Gloo"),
    ({"built_against_torch": "2.12.0"}, "built against torch 2.12.0 but 2.13.0+cpu is installed: run `hvdtrain build"),
    ({**NCCL_BUILD, "torch": "2.14.1", "torch_cuda": "12.8", "built_against_torch": "2.14.1"},
     "built against a torch with CUDA 13.0 but this torch has CUDA 12.8: run `hvdtrain build-horovod`"),
    ({"torch_cuda": "13.0"}, "built against a torch with CUDA none but this torch has CUDA 13.0"),
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


def test_diagnose_a_missing_network_interface():
    assert diagnose(HEALTHY, "eth0") == []
    (problem,) = diagnose(HEALTHY, "ib0")
    assert problem.startswith("network interface ib0 does not exist on this host (it has eth0, lo)")


def test_nccl_build_without_a_driver_is_a_warning_that_names_the_fix():
    """A login node: Horovod with NCCL runs on CPU tensors there, so it warns instead of failing."""
    facts = Facts(**{**HEALTHY.__dict__, **NCCL_BUILD})
    assert diagnose(facts) == []
    (warning,) = advise(facts)
    assert "NCCL 2.30.7 but no GPU driver loads on this node" in warning and "--cpu-only" in warning
    assert advise(Facts(**{**HEALTHY.__dict__, **NCCL_BUILD, "libcuda": True})) == []
    assert advise(HEALTHY) == []
