"""Plain data shared by every layer: a row, a parsed handler, the Job hooks see, an Outcome."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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


@dataclass(frozen=True, slots=True)
class ParsedHandler:
    """What a handler means: the dispatch name, Ruby's Delayed::Job#name, and the payload."""

    name: str
    display_name: str
    payload: Any


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
    timed_out: threading.Event = field(default_factory=threading.Event)
    log: Any = None


# Outcomes: what the executor decided; the worker writes them.


@dataclass(frozen=True, slots=True)
class Succeeded:
    pass


@dataclass(frozen=True, slots=True)
class Rescheduled:
    attempts: int
    run_at: datetime
    last_error: str


@dataclass(frozen=True, slots=True)
class Failed:
    attempts: int
    last_error: str
    destroy: bool = False


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Stopped by shutdown: unlock, no attempt spent."""

    last_error: str


Outcome = Succeeded | Rescheduled | Failed | Interrupted
