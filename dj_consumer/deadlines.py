"""Deadlines: one watchdog thread fires them (a job's max_run_time, heartbeats), and the
error of an attempt that ran out of time."""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable

import structlog

from dj_consumer.errors import JobTimeout
from dj_consumer.models import Job

log = structlog.get_logger("dj_consumer.executor")

LOOK_EVERY = 0.5  # seconds the watchdog sleeps at most between looks at its deadlines


class Watchdog:
    """One thread that fires deadlines (timed_out, heartbeats) instead of a Timer per job."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # When the thread next looks at the heap on its own (it never sleeps longer than
        # LOOK_EVERY): a deadline after that needs no wake-up.
        self._looks_at = -math.inf
        self.wakeups = 0  # notifications sent: each costs a thread switch

    def schedule(self, delay: float, action: Callable[[], None]) -> int:
        with self._cond:
            handle = next(self._ids)
            entry = (self._monotonic() + delay, handle, action)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dj-watchdog", daemon=True)
                self._thread.start()
            if entry[0] < self._looks_at:
                # Wake the thread only when it must fire before it would look anyway: a
                # notify per job costs a thread switch per job.
                self.wakeups += 1
                self._cond.notify()
            return handle

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._cancelled.add(handle)
            if len(self._cancelled) > 64 and len(self._cancelled) * 2 > len(self._heap):
                # Cancelled deadlines behind a long-running one would pile up: rebuild.
                self._heap = [e for e in self._heap if e[1] not in self._cancelled]
                heapq.heapify(self._heap)
                self._cancelled.clear()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    while self._heap and self._heap[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._heap)[1])
                    now = self._monotonic()
                    wait = self._heap[0][0] - now if self._heap else LOOK_EVERY
                    if wait <= 0:
                        break
                    wait = min(wait, LOOK_EVERY)
                    self._looks_at = now + wait
                    self._cond.wait(wait)
                    self._looks_at = -math.inf  # awake: it looks at the heap before sleeping
                if self._stopping:
                    return
                _, _handle, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception:
                log.exception("watchdog.action_failed")


class Expired:
    """The watchdog's action at max_run_time: set timed_out, and remember that this was why."""

    __slots__ = ("fired", "job")

    def __init__(self, job: Job) -> None:
        self.job, self.fired = job, False

    def __call__(self) -> None:
        self.fired = True
        self.job.timed_out.set()


def timeout_error(job: Job, run_time: float, expired: Expired) -> JobTimeout:
    """The error of an attempt that ended with timed_out set: max_run_time, or another reason."""
    reason = job.timed_out.reason
    if expired.fired or reason is None:
        return JobTimeout.after(run_time)
    return JobTimeout(f"stopped before max_run_time: {reason}")
