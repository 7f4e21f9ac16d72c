"""The Python handlers of the interop tests, for in-process workers and `--import` subprocesses.

`register(registry, runs)` registers them on any Registry; importing this module with
INTEROP_RUNS_URL / INTEROP_RUNS_TABLE set (as helpers.py does for worker subprocesses)
registers them on the default `dj_consumer.job`. Each handler mirrors its Ruby twin in
tests/interop/ruby/jobs.rb and records one row in `{table}_runs` with runner "python".
"""

from __future__ import annotations

import os
import time
from typing import Any

from dj_consumer import Job, Registry
from dj_consumer import job as default_registry
from tests.interop.helpers import Runs

#: Names only Python runs; Ruby workers of the tests never load these classes.
PYTHON_ONLY = ("PyOnlyJob", "PyNotifier.notify", "Greeter#greet", "PyActiveJob")
#: Names both sides can run.
SHARED = ("SharedJob", "FlakyJob", "OneShotJob")


def _record(runs: Runs, j: Job, key: Any, note: str | None = None) -> None:
    runs.record(str(key), worker=j.locked_by, job_id=j.id, attempts=j.attempts, note=note)


def register(registry: Registry, runs: Runs) -> None:
    @registry.run("PyOnlyJob")
    def py_only(j: Job) -> None:
        _record(runs, j, j.payload["key"])

    @registry.run("PyNotifier.notify")
    def notify(j: Job) -> None:
        _record(runs, j, j.payload["args"][0])

    @registry.run("Greeter#greet")
    def greet(j: Job) -> None:
        _record(runs, j, j.payload["object"]["key"])

    @registry.run("PyActiveJob")
    def py_active_job(j: Job) -> None:
        _record(runs, j, j.payload["arguments"][0])

    @registry.run("SharedJob")
    def shared(j: Job) -> None:
        """Harness.perform_shared: record, sleep `seconds`, fail with "boom" when asked."""
        p = j.payload
        _record(runs, j, p["key"])
        seconds = p.get("seconds")
        if seconds:
            if p.get("stubborn"):
                time.sleep(float(seconds))  # ignores j.timed_out on purpose
            else:
                j.timed_out.wait(float(seconds))
            _record(runs, j, p["key"], note="done")
        if p.get("fail_on") in ("python", "both"):
            raise RuntimeError("boom")

    @registry.run("FlakyJob")
    def flaky(j: Job) -> None:
        _record(runs, j, j.payload["key"])
        raise RuntimeError(j.payload.get("message") or "boom")

    @registry.run("OneShotJob", max_attempts=1)
    def one_shot(j: Job) -> None:
        _record(runs, j, j.payload["key"])
        raise RuntimeError(j.payload.get("message") or "boom")


if os.environ.get("INTEROP_RUNS_URL") and os.environ.get("INTEROP_RUNS_TABLE"):
    register(default_registry, Runs.from_env())
