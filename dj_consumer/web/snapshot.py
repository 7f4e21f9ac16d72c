"""The overview's numbers: `dj-consumer status` passes taken in the background, and what the
dashboard remembers between them (which queue and name it saw progress on, and when).

A status pass reads the whole table (about 2 s on a million rows), so no page waits for one:
pages show the latest pass, and a thread takes the next while somebody looks — every
`every` seconds, or `cost` times as long as the last pass took, whichever is longer (so
passes run at most 1/cost of the time), and not at all once no page has asked for `idle`
seconds. The recurring page's list of schedules is read in the same pass, while that page is
being looked at (it too reads the whole table).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from dj_consumer.admin import Admin, Filter, NameStatus, horizon
from dj_consumer.config import Config
from dj_consumer.scheduling import ScheduleRow

log = structlog.get_logger(__name__)

#: How long ready rows wait, with no sign of anyone running them, before their queue and name
#: go on the "nobody runs this" list (the rule is printed on the overview: RULE).
STUCK_AFTER = timedelta(minutes=10)
RULE = ("A queue and job name is listed when its oldest ready row has waited "
        "{minutes} min or more, no --import module of this dashboard registers the name, and "
        "in the last {minutes} min of this dashboard's passes no row of it was seen locked by "
        "any worker (Ruby or Python), its ready count never went down, and its oldest ready "
        "row was never taken.")

Key = tuple[str | None, str]


@dataclass(frozen=True)
class Worker:
    locked_by: str
    python: bool  # a lease-renewing Python worker (Config.is_lease_holder)
    jobs: int
    oldest_lock: datetime | None


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    took: float
    lines: list[NameStatus]
    workers: list[Worker]
    progress: dict[Key, datetime]  # the last pass that saw rows of it run or get taken
    watching_since: datetime  # passes since then came without a long gap
    schedules: list[ScheduleRow] | None = None  # read while the recurring page is looked at

    def count(self, f: Filter) -> int:
        """How many rows match a filter without text, as of this pass."""
        states = ("ready", "scheduled", "running", "failed") if f.state == "all" else (f.state,)
        return sum(getattr(s, state) for s in self.lines if _matches(s, f) for state in states)

    def totals(self) -> dict[str, int]:
        return {state: sum(getattr(s, state) for s in self.lines)
                for state in ("ready", "scheduled", "running", "failed")}


def _matches(s: NameStatus, f: Filter) -> bool:
    if f.queue is not None and s.queue != (None if f.queue == "nil" else f.queue):
        return False
    return f.name is None or s.name == f.name


def nobody_runs(snap: Snapshot, python: Iterable[str]) -> list[NameStatus]:
    """The lines RULE lists (see there)."""
    registered = set(python)
    now = snap.taken_at
    out = []
    for s in snap.lines:
        if not s.ready or s.oldest_ready is None or now - s.oldest_ready < STUCK_AFTER:
            continue
        seen = snap.progress.get((s.queue, s.name))
        if s.name in registered or s.running or (seen and now - seen < STUCK_AFTER):
            continue
        out.append(s)
    return out


def workers(lines: Iterable[NameStatus], cfg: Config) -> list[Worker]:
    merged: dict[str, tuple[int, datetime | None]] = {}
    for s in lines:
        for who, (n, since) in s.holders.items():
            count, first = merged.get(who, (0, None))
            oldest = since if first is None or (since is not None and since < first) else first
            merged[who] = (count + n, oldest)
    return [Worker(who, cfg.is_lease_holder(who), n, since)
            for who, (n, since) in sorted(merged.items())]


def progressed(before: NameStatus | None, now: NameStatus) -> bool:
    """Did rows of this line run, or leave the ready set, since the last pass?"""
    if now.running:
        return True
    if before is None or not before.ready:
        return False
    if now.ready < before.ready:
        return True
    return (before.oldest_ready is not None
            and (now.oldest_ready is None or now.oldest_ready > before.oldest_ready))


@dataclass
class Snapshots:
    """The latest pass, and the thread that takes the next (see the module docstring)."""

    admin: Admin
    config: Config
    now: Callable[[], datetime]
    every: float = 5.0
    cost: float = 4.0
    idle: float = 60.0
    _latest: Snapshot | None = None
    _wanted: float = 0.0
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _progress: dict[Key, datetime] = field(default_factory=dict)
    error: str | None = None  # why the last pass failed (the database is away); None after one works
    #: Every recurring row (None: the table has none of the columns); read in a pass while the
    #: recurring page has been asked for within `idle` seconds (want_schedules).
    read_schedules: Callable[[], list[ScheduleRow] | None] | None = None
    _schedules_wanted: float = float("-inf")

    def latest(self) -> Snapshot | None:
        """The latest pass (None before the first); asking keeps the passes coming."""
        self._wanted = time.monotonic()
        self._wake.set()
        return self._latest

    def want_schedules(self) -> None:
        """The recurring page is open: read the schedules in the next passes too."""
        self._schedules_wanted = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dj-web-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def take(self) -> Snapshot:
        """One status pass now (the thread's work; tests call it directly)."""
        started = time.monotonic()
        now = self.now()
        lines = self.admin.status(now, horizon(now, self.config.max_run_time))
        wanted = time.monotonic() - self._schedules_wanted <= self.idle
        rows = self.read_schedules() if wanted and self.read_schedules is not None else None
        took = time.monotonic() - started
        before = self._latest
        gap = max(3 * self.every, 3 * self.cost * (before.took if before else 0), 60.0)
        fresh = before is None or (now - before.taken_at).total_seconds() > gap
        old = {} if fresh or before is None else {(s.queue, s.name): s for s in before.lines}
        for s in lines:
            if progressed(old.get((s.queue, s.name)), s):
                self._progress[(s.queue, s.name)] = now
        snap = Snapshot(now, took, lines, workers(lines, self.config), dict(self._progress),
                        now if fresh or before is None else before.watching_since, rows)
        self._latest, self.error = snap, None
        log.debug("web.status_pass", seconds=round(took, 3), lines=len(lines))
        return snap

    def _loop(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() - self._wanted > self.idle:
                self._wake.wait()  # nobody is looking: no passes until a page asks
                self._wake.clear()
                continue
            try:
                pause = max(self.every, self.cost * self.take().took)
            except Exception as exc:  # the database is away: show the last pass, try again
                from dj_consumer.dberrors import describe

                self.error = describe(exc)
                log.warning("web.status_failed", error=self.error)
                pause = self.every
            self._stop.wait(pause)
