# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# What is installed: the runtime alone (demo), or with the dev extra (tests, lint, bench).
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev

.PHONY: demo test test-fast soak lint bench fixtures screenshots clean help

help:
	@echo "make demo   - venv + install (runtime only) + SQLite table + sample jobs + run the worker until done"
	@echo "make test   - lint (ruff, mypy --strict) and the whole test suite (installs the dev extra)"
	@echo "make bench  - throughput, latency, memory and parse speed against the bare protocol and Ruby;"
	@echo "              results in .bench/results.md, or benchmarks/results.md with SAVE=1"
	@echo "make lint   - ruff + mypy --strict only"
	@echo "make soak   - 10,000-job contention drills, then the model test (tests/model) with random"
	@echo "              seeds for SOAK_MINUTES (default 10)"
	@echo "make screenshots - docs/web-*.png from a real run (MariaDB, Ruby, headless Chromium)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(RUNTIME)

demo: $(RUNTIME)
	$(PY) -m sample_jobs.demo

lint: $(DEV)
	$(VENV)/bin/ruff check dj_consumer tests sample_jobs benchmarks
	$(VENV)/bin/mypy

test: $(DEV) lint
	$(VENV)/bin/pytest -q -ra

test-fast: $(DEV)
	$(VENV)/bin/pytest -q -ra -x -m "not slow"

# The eight-worker contention drill at 10,000 jobs (make test runs it at 2,000-3,000), then the
# model-based fault-injection test with random seeds, as long as asked:
# make soak SOAK_MINUTES=30. Every broken schedule is printed with its replay command.
SOAK_MINUTES ?= 10
soak: $(DEV)
	DJ_CONTENTION_JOBS=10000 $(VENV)/bin/pytest -q -ra tests/interop/test_contention.py
	DJ_MODEL_SOAK_MINUTES=$(SOAK_MINUTES) $(VENV)/bin/pytest -q -ra tests/model -k soak

bench: $(DEV)
	$(PY) -m benchmarks.run $(if $(SAVE),--output benchmarks/results.md)

screenshots: $(DEV)
	$(PY) -m tests.browser.screenshots

fixtures:
	ruby tests/fixtures/generate.rb
	ruby tests/fixtures/cron_fugit.rb

clean:
	rm -rf $(VENV) demo.db *.egg-info .pytest_cache .mypy_cache .ruff_cache .bench
