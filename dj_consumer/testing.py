"""Helpers for testing your handlers, in your own test suite (docs/handlers.md "Testing").

- `make_job(name, payload, **fields)`: a `Job` as a hook receives it, without a database.
- `run_inline(name, payload)`: one attempt of the registered handler and its hooks, in Ruby's
  order, with no table: returns the Outcome (`Succeeded`, `Rescheduled`, `Failed`) that a worker
  would write; `raise_errors=True` raises the job's exception instead.
- `run_now(name, payload)` (also `dj_consumer.run_now`): the same attempt, returning the
  handler's result or raising its error — for a unit test or a console.
- `JobTable`: a temporary SQLite delayed_jobs table to `enqueue` into and `work_off`; the pytest
  fixture `dj_table` (`pytest_plugins = ["dj_consumer.pytest_plugin"]`) hands one out per test.

Nothing here mocks the worker: `run_inline` uses the worker's own Executor (hooks, FailJob,
max_attempts, reschedule_at, the max_run_time flag), and `JobTable` runs a real worker.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dj_consumer.clock import Clock, SystemClock
from dj_consumer.errors import RegistryError
from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.registry import Registry

if TYPE_CHECKING:
    from dj_consumer.worker import Worker

__all__ = ["Failed", "JobTable", "Rescheduled", "Row", "Succeeded", "make_job", "run_inline",
           "run_now"]

#: The locked_by a test job carries (a worker writes "{worker_id}[:{slot}] host:… pid:…").
TEST_LOCKED_BY = "py host:test pid:0"
_ids = itertools.count(1)


def make_job(name: str | None = None, payload: Any = None, *, handler: str | None = None,
             registry: Registry | None = None, **fields: Any) -> Job:
    """A `Job` for a unit test: `make_job("NewsletterJob", {"list_id": 7}, attempts=2)`.

    `handler=` (YAML as Rails wrote it) fills name, display_name and payload by parsing it as
    the worker does. Any `Job` field may be given (`id`, `attempts`, `max_attempts`, `queue`,
    `priority`, `run_at`, `locked_by`, `display_name`); `max_attempts` and `queue` default to
    the name's `@job.run(...)` options in `registry` (default `dj_consumer.job`), else 25 / None.
    """
    if handler is not None:
        from dj_consumer import ruby_yaml

        parsed = ruby_yaml.load(handler)
        name = name or parsed.name
        payload = parsed.payload if payload is None else payload
        fields.setdefault("display_name", parsed.display_name)
    if not name:
        raise TypeError("make_job needs a name (or a handler to read it from)")
    spec = _registry(registry).spec(name)
    job_id = fields.pop("id", None) or next(_ids)
    attempts = fields.pop("attempts", 0)
    timed_out = fields.pop("timed_out", None)
    values: dict[str, Any] = {
        "id": job_id,
        "name": name,
        "display_name": fields.pop("display_name", name),
        "payload": {} if payload is None else payload,
        "attempts": attempts,
        "max_attempts": fields.pop("max_attempts", None)
        or (spec.max_attempts if spec is not None and spec.max_attempts else 25),
        "queue": fields.pop("queue", spec.queue if spec is not None else None),
        "priority": fields.pop("priority", 0),
        "run_at": fields.pop("run_at", SystemClock().now()),
        "locked_by": fields.pop("locked_by", TEST_LOCKED_BY),
        "handler": handler if handler is not None else _handler(name, payload),
        "log": fields.pop("log", None) or structlog.get_logger("dj_consumer.testing").bind(
            job_id=job_id, name=name, attempt=attempts + 1),
    }
    if fields:
        raise TypeError(f"make_job got unknown Job fields: {', '.join(sorted(fields))}")
    job = Job(**values)
    if timed_out:
        job.timed_out.set()
    return job


def run_inline(name: str | Job, payload: Any = None, *, registry: Registry | None = None,
               raise_errors: bool = False, clock: Clock | None = None,
               max_run_time: float = 14400.0, destroy_failed_jobs: bool = False,
               **fields: Any) -> Outcome:
    """Run one attempt of the handler registered for `name` (with its hooks and the global
    "*" hooks, in Ruby's order) as a worker would, without a table; return what the worker
    would write: `Succeeded()`, `Rescheduled(attempts, run_at, last_error)` or
    `Failed(attempts, last_error)`, each failed one with `.error`, the exception.

    `name` may be a Job from `make_job`; else `payload` and `fields` build one. With
    `raise_errors=True` a failed attempt raises the job's own exception (the hooks ran).
    `clock` (e.g. `dj_consumer.clock.FakeClock`) fixes the time reschedule_at sees.
    """
    from dj_consumer.deadlines import Watchdog
    from dj_consumer.executor import Executor

    reg = _registry(registry)
    job = name if isinstance(name, Job) else make_job(name, payload, registry=reg, **fields)
    spec = reg.spec(job.name)
    if spec is None:
        known = ", ".join(reg.names()) or "none"
        raise RegistryError(f"no @job.run handler for {job.name!r} (registered: {known})")
    watchdog = Watchdog(time.monotonic)
    executor = Executor(clock=clock or SystemClock(), watchdog=watchdog,
                        max_run_time=max_run_time, destroy_failed_jobs=destroy_failed_jobs)
    try:
        outcome = executor.execute(job, spec)
    finally:
        executor.close_loop()
        watchdog.stop()
    if raise_errors and isinstance(outcome, (Rescheduled, Failed)) and outcome.error is not None:
        raise outcome.error
    return outcome



def run_now(name: str | Job, payload: Any = None, *, registry: Registry | None = None,
            **fields: Any) -> Any:
    """Run the handler registered for `name` and its hooks in this process, with no table,
    and return what it returned, or raise its error (after the error hooks ran, as a worker
    would): `dj_consumer.run_now("ReportJob", {"year": 2026})`. Progress and j.track work
    (they go nowhere); j.cancelled stays false."""
    outcome = run_inline(name, payload, registry=registry, raise_errors=True, **fields)
    if isinstance(outcome, Succeeded):
        return outcome.result
    raise RuntimeError(f"the job did not succeed: {outcome}")  # raise_errors raised before


@dataclass(frozen=True)
class Row:
    """One row of a JobTable, as the test sees it."""

    id: int
    attempts: int
    run_at: datetime | None
    failed_at: datetime | None
    locked_by: str | None
    last_error: str | None
    queue: str | None
    handler: str


class JobTable:
    """A delayed_jobs table in a temporary SQLite file, with a real worker to work it off:

        table = JobTable(tmp_path, registry=my_registry)
        table.enqueue("NewsletterJob", {"list_id": 7})
        assert table.work_off() == (1, 0)
        assert table.rows() == []

    `config` adds worker settings (max_attempts, reserve_batch …); close() when done.
    """

    def __init__(self, directory: str | Path, *, registry: Registry | None = None,
                 config: Mapping[str, Any] | None = None, clock: Clock | None = None) -> None:
        from sqlalchemy import create_engine

        from dj_consumer import schema

        self.path = Path(directory) / "delayed_jobs.sqlite3"
        self.url = f"sqlite:///{self.path}"
        self.registry = _registry(registry)
        self.clock = clock
        engine = create_engine(self.url)
        try:
            schema.create(engine, "delayed_jobs")
        finally:
            engine.dispose()
        self.config: dict[str, Any] = {"database_url": self.url, "sleep_delay": 0.05,
                                       **(config or {})}
        self._worker: Worker | None = None

    @property
    def worker(self) -> Worker:
        """The table's worker (built on first use, with the table's registry and config)."""
        if self._worker is None:
            from dj_consumer.worker import make_worker

            self._worker = make_worker(self.config, self.registry, clock=self.clock)
        return self._worker

    def enqueue(self, name: str, payload: Any = None, **options: Any) -> int:
        """`dj_consumer.enqueue` into this table (shape=, queue=, priority=, run_at=, kwargs=)."""
        from dj_consumer.enqueue import enqueue

        return enqueue(self.url, name, payload, registry=self.registry, clock=self.clock,
                       **options)

    def insert_handler(self, handler: str, *, queue: str | None = None, priority: int = 0,
                       run_at: datetime | None = None) -> int:
        """Insert a row with this handler text as Rails wrote it (e.g. a fixture file)."""
        from dj_consumer.enqueue import NewJob, insert
        from dj_consumer.store import Store

        store = Store(self.worker.config)
        try:
            return insert(store, NewJob(handler, queue, priority), run_at=run_at,
                          clock=self.clock)
        finally:
            store.close()

    def work_off(self, num: int = 100) -> tuple[int, int]:
        """Run up to `num` ready jobs now: (succeeded, failed attempts), as Ruby's work_off."""
        return self.worker.work_off(num)

    def rows(self) -> list[Row]:
        """Every row left in the table, by id (a succeeded job is deleted)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                result = conn.execute(text(
                    "SELECT id, attempts, run_at, failed_at, locked_by, last_error, queue, "
                    "handler FROM delayed_jobs ORDER BY id"))
                return [Row(*r) for r in result]
        finally:
            engine.dispose()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> JobTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from dj_consumer import job

    return job


def _handler(name: str, payload: Any) -> str:
    """The YAML Rails would have written for an object job `name` with these attributes, or
    (for a `.delay` name, or a payload that is no attribute dict) a plain object tag."""
    from dj_consumer import ruby_yaml

    try:
        return ruby_yaml.dump_handler(name, {} if payload is None else payload)
    except (TypeError, ValueError):
        head = name.split("#")[0].split(".")[0]
        return f"--- !ruby/object:{head} {{}}\n"
