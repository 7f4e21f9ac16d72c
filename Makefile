# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast soak lint bench fixtures clean help

help:
	@echo "make demo   - venv + install + SQLite table + sample jobs + run the worker until done"
	@echo "make test   - lint (ruff, mypy --strict) and the whole test suite"
	@echo "make bench  - throughput, latency and memory against the bare protocol and Ruby"
	@echo "make lint   - ruff + mypy --strict only"
	@echo "make soak   - the model test (tests/model) with random seeds for SOAK_MINUTES (default 10)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sample_jobs.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check dj_consumer tests sample_jobs benchmarks
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -ra

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -ra -x -m "not slow"

# The model-based fault-injection test with random seeds, as long as asked:
# make soak SOAK_MINUTES=30. Every broken schedule is printed with its replay command.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	DJ_MODEL_SOAK_MINUTES=$(SOAK_MINUTES) $(VENV)/bin/pytest -q -ra tests/model -k soak

bench: $(STAMP)
	$(PY) -m benchmarks.run

fixtures:
	ruby tests/fixtures/generate.rb

clean:
	rm -rf $(VENV) demo.db *.egg-info .pytest_cache .mypy_cache .ruff_cache
