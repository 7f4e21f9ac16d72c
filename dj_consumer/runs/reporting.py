"""What a handler reports to its run record, through a small interface the worker supplies.

A handler (or a ready-made one such as contrib.http_steps) asks `current()` for the reporter
of the job it runs; the worker sets one around each attempt with `reporting(...)` (a context
variable, so it follows the handler's thread or task). Without one — no runs table, or a
handler called outside a worker — `current()` is a NullReporter: reports go nowhere and a
checkpoint lives only as long as the attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from dj_consumer.clock import Clock, SystemClock
from dj_consumer.runs.store import RunsStore


class RunReporter(Protocol):
    """The run record as a handler sees it."""

    def progress(self, current: int, total: int | None = None, stage: str | None = None) -> None:
        """How far the job is (None keeps the total or stage); may be throttled."""

    def checkpoint(self) -> Any:
        """What an earlier attempt of this job saved (None at first)."""

    def save_checkpoint(self, data: Any) -> None:
        """Keep `data` (JSON) for the next attempt; written before this returns."""


class NullReporter:
    """No run record: progress goes nowhere, a checkpoint lasts as long as the attempt."""

    def __init__(self) -> None:
        self._saved: Any = None

    def progress(self, current: int, total: int | None = None, stage: str | None = None) -> None:
        pass

    def checkpoint(self) -> Any:
        return self._saved

    def save_checkpoint(self, data: Any) -> None:
        self._saved = data


class StoreReporter:
    """A reporter backed by RunsStore: each call one short statement on `engine`. Progress is
    written at most every `min_interval` seconds (the latest report wins; `flush()` writes
    one still held back); a checkpoint is written at once."""

    def __init__(self, engine: Engine, store: RunsStore, job_id: int, *,
                 clock: Clock | None = None, min_interval: float = 0.0) -> None:
        self.engine, self.store, self.job_id = engine, store, job_id
        self.clock: Clock = clock or SystemClock()
        self.min_interval = min_interval
        self._last = -float("inf")
        self._held: tuple[int, int | None, str | None] | None = None
        self._lock = threading.Lock()

    def progress(self, current: int, total: int | None = None, stage: str | None = None) -> None:
        with self._lock:
            if self.clock.monotonic() - self._last < self.min_interval:
                self._held = (current, total, stage)
                return
            self._held = None
            self._last = self.clock.monotonic()
        self._write(current, total, stage)

    def flush(self) -> None:
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            self._write(*held)

    def _write(self, current: int, total: int | None, stage: str | None) -> None:
        with self.engine.begin() as conn:
            self.store.progress(conn, self.job_id, current, total, stage, now=self.clock.now())

    def checkpoint(self) -> Any:
        with self.engine.connect() as conn:
            run = self.store.get(conn, self.job_id)
        return None if run is None else run.checkpoint

    def save_checkpoint(self, data: Any) -> None:
        with self.engine.begin() as conn:
            self.store.save_checkpoint(conn, self.job_id, data, now=self.clock.now())


_current: ContextVar[RunReporter | None] = ContextVar("dj_consumer_run_reporter", default=None)


def current() -> RunReporter:
    """The reporter of the job this thread (or task) runs, else a NullReporter."""
    return _current.get() or NullReporter()


@contextmanager
def reporting(reporter: RunReporter) -> Iterator[RunReporter]:
    """Make `reporter` the current one while the block runs (the worker, around an attempt)."""
    token = _current.set(reporter)
    try:
        yield reporter
    finally:
        _current.reset(token)
