# Quick start: `make run` (embedded default, end to end) and `make test` (the suite).
# Both create .venv on first use and reinstall when setup.cfg changes.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tiny models on a 2-core machine: one thread is as fast as two and immune to contention.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install clean mutants slurm

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the local CPU wheel, never the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/s2d-bench run $(ARGS)

# Both cores: test files are spread over two workers (xdist's loadfile keeps a file's module fixtures in one process).
# In the order tests/conftest.py gives (longest files first, tests/file_seconds.json), not xdist's most-tests-first.
test: $(STAMP) slurm
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

# The executor's tests start a real one-node Slurm cluster (tests/slurm_cluster.py) from Debian's packages.
slurm:
	command -v slurmctld >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin" command -v slurmctld >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge)

# Mutation testing of the code that makes the numbers (pyproject.toml [tool.mutmut]); not part of `make test`.
mutants: $(STAMP)
	$(PY) benchmarks/mutants.py

clean:
	rm -rf runs .pytest_cache mutants
