# Shadowvault: `make run` (the main job on an embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := tools/system-packages.txt
STAMP_SYSTEM := $(VENV)/.system-packages
STAMP_VENV := $(VENV)/.installed
STAMP_COMPILED := $(VENV)/.compiled
# test modules run side by side, each whole on one worker (its module fixtures: a server, a booted
# guest). `make test` runs every test but the lab's; most of them wait on I/O and servers, so four
# workers suit two CPUs. `make test-lab` runs the tests marked `lab` (a whole machine built or booted,
# a domain controller provisioned: minutes of CPU each), three at a time. CI runs both (.ci/run).
TEST_WORKERS ?= 4
LAB_WORKERS ?= 3
PYTEST := $(PY) -m pytest -q --dist loadscope --durations=30
# pytest caches its rewritten test modules (tests/**/__pycache__) only where Python may write byte
# code: one collection writes them, and each worker loads them instead of rewriting ~300 modules
# (15 s of CPU apiece) wherever PYTHONDONTWRITEBYTECODE is set
WARM_REWRITES := env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest --collect-only -q

.PHONY: run test test-lab bench lint deps clean

deps: $(STAMP_SYSTEM) $(STAMP_VENV) $(STAMP_COMPILED)

$(STAMP_SYSTEM): $(SYSTEM_PACKAGES) tools/install-system-packages.sh
	tools/install-system-packages.sh $(SYSTEM_PACKAGES)
	@mkdir -p $(VENV) && touch $@

$(STAMP_VENV): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# the package's byte code, as `pip install` of a wheel writes it: an editable install writes none,
# and where PYTHONDONTWRITEBYTECODE is set every command compiled ~300 modules first (0.6 s of CPU
# in each backup and restore, and in every seal or restore worker process)
$(STAMP_COMPILED): $(STAMP_VENV) $(shell find src -name '*.py')
	$(PY) -m compileall -q src
	touch $@

run: deps
	$(PY) -m shadowvault.demo_backup

test: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(WARM_REWRITES) -m "not lab" | tail -n 1
	$(PYTEST) -n $(TEST_WORKERS) -m "not lab"

test-lab: deps
	$(WARM_REWRITES) -m lab | tail -n 1
	$(PYTEST) -n $(LAB_WORKERS) -m lab

bench: deps
	tools/install-system-packages.sh tools/bench-packages.txt
	$(PY) bench/freeze_window.py
	$(PY) bench/freeze_window.py --costs
	$(PY) bench/writers.py
	$(PY) bench/api.py
	$(PY) bench/compare.py
	$(PY) bench/compare.py --scale
	$(PY) bench/sparse.py
	$(PY) bench/compare.py --backend s3
	$(PY) bench/vms.py
	$(PY) bench/recover.py

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	-$(PY) -m shadowvault.demo --clean
	rm -rf var
