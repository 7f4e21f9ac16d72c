"""Plain data shared by every layer: a row, a parsed handler, the Job hooks see, an Outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dj_consumer.errors import HandlerParseError

from dj_consumer.attempt import Attempt, CancelFlag


@dataclass(frozen=True, slots=True)
class JobRow:
    """The columns of one delayed_jobs row that the worker needs."""

    id: int
    priority: int
    attempts: int
    handler: str
    run_at: datetime | None
    queue: str | None
    locked_at: datetime | None = None
    locked_by: str | None = None
    failed_at: datetime | None = None
    #: A reserved row's handler as the reserve's `accept` parsed it (or why it could not be).
    parsed: ParsedHandler | HandlerParseError | None = None


@dataclass(frozen=True, slots=True)
class ParsedHandler:
    """What a handler means: the dispatch name, Ruby's Delayed::Job#name, and the payload."""

    name: str
    display_name: str
    payload: Any


class TimedOut(threading.Event):
    """`j.timed_out`: a threading.Event that is also a flag, so `if j.timed_out:` means what
    it reads as (a bare Event is always true). Set at max_run_time, when the lease is lost or
    at risk, and when a stop interrupts the job."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None  # why it was set, when not max_run_time

    def stop(self, reason: str) -> None:
        """Set it for another reason than max_run_time (that reason becomes the error)."""
        if not self.is_set():
            self.reason = reason
        self.set()

    def __bool__(self) -> bool:
        return self.is_set()

    def set(self) -> None:
        super().set()
        for callback in list(self._callbacks):
            callback()

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the flag is set (at once if it is set already)."""
        self._callbacks.append(callback)
        if self.is_set():
            callback()

    def remove_callback(self, callback: Callable[[], None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What every hook receives."""

    id: int
    name: str
    display_name: str
    payload: Any
    attempts: int
    max_attempts: int
    queue: str | None
    priority: int
    run_at: datetime | None
    locked_by: str | None
    handler: str
    timed_out: TimedOut = field(default_factory=TimedOut)
    log: Any = None
    #: Set when the run record gets a cancel request (docs/runs.md "Cancel"); timed_out is set too.
    cancelled: CancelFlag = field(default_factory=CancelFlag)
    #: This attempt's progress, tracked items and result (dj_consumer/attempt.py).
    attempt: Attempt = field(default_factory=Attempt, compare=False, repr=False)

    def report_progress(self, current: int, total: int | None = None,
                        stage: str | None = None) -> None:
        """How far the job is, for its run record (throttled; never waits on the database;
        None keeps the total or stage). Without a runs table it goes nowhere."""
        self.attempt.progress(current, total, stage)

    def track(self, items: Iterable[Any], fn: Callable[[Any], Any] | None = None, *,
              errors: str = "continue") -> Iterator[Any]:
        """`for item in j.track(items):` counts each item processed; `j.skip(item)` (or a
        callback `fn` returning dj_consumer.SKIP) skipped; an exception in the body errored,
        and the loop goes on (errors="continue": the handler is called again and resumes
        after that item) or the attempt fails (errors="raise")."""
        return self.attempt.track(items, fn, errors=errors)

    def skip(self, item: Any = None) -> None:
        """Count the item in hand as skipped."""
        self.attempt.skip(item)


# Outcomes: what the executor decided; the worker writes them.


@dataclass(frozen=True, slots=True)
class Succeeded:
    #: the handler's return value (JSON text when the run record keeps it); not compared
    result: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Rescheduled:
    attempts: int
    run_at: datetime
    last_error: str
    #: the exception, for the log line (error_class, traceback); not written, not compared
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    attempts: int
    last_error: str
    destroy: bool = False
    #: the exception, for the log line (error_class, traceback); not written, not compared
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Stopped by shutdown: unlock, no attempt spent."""

    last_error: str


Outcome = Succeeded | Rescheduled | Failed | Interrupted
