# hvdtrain: `make demo` sets everything up and trains on 2 ranks; `make test` runs every test.
# Both install what they need (build tools if missing, a virtualenv, Horovod built for its torch)
# and are idempotent: a second run only checks.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
HVDTRAIN := $(abspath $(VENV))/bin/hvdtrain
# torch for a new venv; `make install TORCH=2.14.1` installs that one; a torch already in the venv stays.
DEFAULT_TORCH := 2.13.0
TORCH ?=
STAMP := $(VENV)/.hvdtrain-installed
PIP := $(PY) -m pip install -q --disable-pip-version-check
DEMO_OUT ?= runs/demo
# What building Horovod needs (program or file = the Debian package that provides it), and what
# the tests need on top: Slurm daemons, munge, sshd in network namespaces.
BUILD_TOOLS := mpicc=libopenmpi-dev mpirun=openmpi-bin cmake=cmake c++=g++ make=make patch=patch \
  Python.h=python3-dev
TEST_TOOLS := slurmctld=slurmctld slurmd=slurmd sbatch=slurm-client munged=munge libpmix.so=libpmix-dev \
  sshd=openssh-server ssh=openssh-client ip=iproute2

.PHONY: install build-tools test-tools torch demo test test-gpu lint docs docs-serve bench clean slurm-up slurm-down

install: build-tools torch $(STAMP)

build-tools:
	@PYTHON=$(PYTHON) scripts/ensure-tools $(BUILD_TOOLS)

test-tools:
	@scripts/ensure-tools $(TEST_TOOLS)

$(PY):
	$(PYTHON) -m venv $(VENV)

torch: $(PY)
	@if [ -n "$(TORCH)" ]; then \
	  $(PY) -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "$(TORCH)")' 2>/dev/null \
	    || $(PIP) torch==$(TORCH); \
	elif ! $(PY) -c 'import torch' 2>/dev/null; then $(PIP) torch==$(DEFAULT_TORCH); fi

# Re-run when the package's files change or the venv's torch is another one (its version file).
$(STAMP): setup.cfg pyproject.toml $(wildcard hvdtrain/install/*.py hvdtrain/install/patches/*.patch) \
          $(wildcard $(VENV)/lib/python3*/site-packages/torch/version.py)
	$(PIP) numpy
	$(PIP) --no-binary mpi4py mpi4py
	$(PIP) --no-build-isolation -e '.[dev,docs,tensorboard,mlflow]'
	$(HVDTRAIN) build-horovod
	$(HVDTRAIN) doctor
	touch $@

demo: install
	$(HVDTRAIN) run -np 2 -- $(HVDTRAIN) train --model cnn --dataset digits --epochs 10 \
	  --batch-size 32 --lr 0.05 --warmup-epochs 1 --out $(DEMO_OUT)

lint: install
	$(abspath $(VENV))/bin/ruff check hvdtrain tests examples
	$(abspath $(VENV))/bin/mypy hvdtrain

test: install test-tools lint
	$(PY) -m pytest

# GPU checks, kept out of `make test` (CI has no GPU): NCCL, device choice per rank, fp16 resume,
# accumulation/clipping/compression/Adam, the example (tests/gpu_checks.py says what each needs;
# the two-GPU ones are left out, with a line saying so, on a node with one). Needs a CUDA torch:
# make test-gpu TORCH=2.14.1
test-gpu: install
	@gpus=$$($(PY) -c 'import torch; print(torch.cuda.device_count())'); set --; \
	if [ "$$gpus" -lt 2 ]; then echo "test-gpu: $$gpus GPU(s) here: the two-GPU checks are left out"; \
	  set -- -m 'not two_gpus'; fi; \
	HVDTRAIN_GPU_CHECKS=1 $(PY) -m pytest "$$@" tests/gpu_checks.py

# The documentation site (docs/, mkdocs.yml) into site/; `make test` builds it too (tests/test_docs.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(abspath $(VENV))/bin/mkdocs build --strict --site-dir site

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(abspath $(VENV))/bin/mkdocs serve

# Benchmarks (not part of `make test`): idle CPU per rank, all-reduce per backend and training
# throughput against DDP, the independent-process limit and upstream's busy waiting (same binary),
# written to bench-out/ (JSON, CSV, PNG).
bench: install
	$(HVDTRAIN) bench idle -np 2 --seconds 5 --rounds 3 --out bench-out
	$(HVDTRAIN) bench allreduce -np 2 --sizes 4K,64K,1M,16M,64M --rounds 5 --out bench-out
	$(HVDTRAIN) bench train -np 2 --rounds 5 --out bench-out
	$(HVDTRAIN) bench model --params 44.5e6 --step-time 0.49 --bandwidth 3.125 --latency 25

# A real two-node Slurm cluster on this machine (state in .slurm/); then `. .slurm/env`.
slurm-up: install test-tools
	bash slurm/local-cluster.sh up

slurm-down:
	bash slurm/local-cluster.sh down

clean:
	rm -rf $(VENV) runs build site hvdtrain.egg-info .pytest_cache .mypy_cache .ruff_cache
