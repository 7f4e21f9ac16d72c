"""The observer seam: what a worker tells metrics and health checks as it works.

`Observer` does nothing; the worker calls it at a handful of one-line call sites, so a
worker without metrics pays a no-op method call per event and nothing else. A subclass
(dj_consumer.metrics.Metrics, dj_consumer.health.Health) overrides what it needs. Every
method is called from slot threads: an implementation is thread-safe and never raises
(a failure is logged by `Observers` and the job goes on).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import structlog

from dj_consumer.models import Job, Outcome

log = structlog.get_logger(__name__)

__all__ = ["Observer", "Observers", "Poll"]


class Poll(enum.Enum):
    """What one reserve found: a job, nothing ready, or a database error."""

    FOUND = "found"
    NOTHING = "nothing"
    ERROR = "error"


class Observer:
    """The no-op observer: override what you need."""

    def tick(self) -> None:
        """The worker's watch loop turned (about every 0.1 s while it runs)."""

    def polled(self, kind: Poll, seconds: float, exc: BaseException | None = None) -> None:
        """One reserve ended: FOUND/NOTHING after `seconds`, or ERROR with `exc`."""

    def started(self, job: Job) -> None:
        """A reserved job's handler starts."""

    def ran(self, job: Job, seconds: float) -> None:
        """A job's handler returned (or raised) after `seconds`."""

    def outcome(self, job: Job, outcome: Outcome, lost: bool = False) -> None:
        """A job's outcome is in the table; `lost`: the row was no longer ours (lock lost)."""

    def stopping(self) -> None:
        """The worker was asked to stop (readiness ends)."""


class Observers(Observer):
    """Several observers as one; a failing one is logged, never lets a job fail."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def _each(self, method: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception as exc:  # an observer's bug must not stop the worker
                log.error("observer.failed", observer=type(observer).__name__, method=method,
                          error=f"{type(exc).__name__}: {exc}")

    def tick(self) -> None:
        self._each("tick")

    def polled(self, kind: Poll, seconds: float, exc: BaseException | None = None) -> None:
        self._each("polled", kind, seconds, exc)

    def started(self, job: Job) -> None:
        self._each("started", job)

    def ran(self, job: Job, seconds: float) -> None:
        self._each("ran", job, seconds)

    def outcome(self, job: Job, outcome: Outcome, lost: bool = False) -> None:
        self._each("outcome", job, outcome, lost)

    def stopping(self) -> None:
        self._each("stopping")
