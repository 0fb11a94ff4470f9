# hvdtrain: `make demo` sets everything up and trains on 2 ranks; `make test` runs every test.
# Both install what they need (Debian packages, a virtualenv, Horovod built for torch 2.13)
# and are idempotent: a second run only checks.

SHELL := /bin/bash
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
HVDTRAIN := $(abspath $(VENV))/bin/hvdtrain
STAMP := $(VENV)/.hvdtrain-installed
SYSTEM_PACKAGES := openmpi-bin libopenmpi-dev cmake g++ make slurm-client \
  openssh-server openssh-client iproute2 slurmctld slurmd munge libpmix-dev
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PIP := $(PY) -m pip install -q --disable-pip-version-check
DEMO_OUT ?= runs/demo

.PHONY: install system-packages demo test lint bench clean slurm-up slurm-down

install: $(STAMP)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi

$(STAMP): setup.cfg pyproject.toml hvdtrain/horovod_build.py hvdtrain/detect.py | system-packages
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) torch==2.13.0 numpy
	$(PIP) wheel cloudpickle psutil pyyaml packaging cffi
	$(PIP) --no-binary mpi4py mpi4py
	$(PY) -m hvdtrain.horovod_build
	$(PIP) --no-build-isolation -e '.[dev]'
	$(HVDTRAIN) doctor
	touch $@

demo: install
	$(HVDTRAIN) run -np 2 -- $(HVDTRAIN) train --model cnn --dataset digits --epochs 10 \
	  --batch-size 32 --lr 0.05 --warmup-epochs 1 --out $(DEMO_OUT)

lint: install
	$(abspath $(VENV))/bin/ruff check hvdtrain tests examples
	$(abspath $(VENV))/bin/mypy hvdtrain

test: install lint
	$(PY) -m pytest

# Benchmarks (not part of `make test`): all-reduce per backend and training throughput against
# DDP and the independent-process limit, written to bench-out/ (JSON, CSV, PNG).
bench: install
	$(HVDTRAIN) bench allreduce -np 2 --sizes 4K,64K,1M,16M,64M --out bench-out
	$(HVDTRAIN) bench train -np 2 --rounds 5 --out bench-out
	$(HVDTRAIN) bench model --params 44.5e6 --step-time 0.49 --bandwidth 3.125 --latency 25

# A real two-node Slurm cluster on this machine (state in .slurm/); then `. .slurm/env`.
slurm-up: install
	bash slurm/local-cluster.sh up

slurm-down:
	bash slurm/local-cluster.sh down

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
