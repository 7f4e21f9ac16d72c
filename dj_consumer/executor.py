"""One attempt of one job: hooks in Ruby's order, the cooperative deadline, exception → Outcome.

No SQL here: the worker writes whatever Outcome this returns.
"""

from __future__ import annotations

import heapq
import itertools
import math
import multiprocessing
import os
import threading
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from dj_consumer.clock import Clock
from dj_consumer.errors import ChildJobError, FailJob, JobTimeout, ProcessTimeout
from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.registry import JobSpec

log = structlog.get_logger(__name__)


def default_reschedule_at(now: datetime, attempts: int) -> datetime:
    """Delayed::Backend::Base#reschedule_at: now + attempts**4 + 5 seconds."""
    return now + timedelta(seconds=attempts**4 + 5)


def format_error(exc: BaseException) -> str:
    """last_error as Delayed::Backend::Base#error= writes it: message, newline, backtrace."""
    message = str(exc) or type(exc).__name__
    trace = getattr(exc, "child_traceback", "") or "".join(traceback.format_exception(exc))
    return f"{message}\n{trace.rstrip()}"


def run_in_child(fn: Callable[[Job], Any], job: Job, run_time: float) -> None:
    """timeout="process": run `fn(job)` in a forked child that is killed at run_time.

    fork, not spawn: the child inherits the registry and the job as they are, without
    pickling. It never touches the parent's database connections and leaves with os._exit.
    """
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def child() -> None:
        reader.close()
        try:
            fn(job)
            writer.send(None)
        except BaseException as exc:
            writer.send((type(exc).__name__, str(exc), format_error(exc).split("\n", 1)[1]))
        finally:
            writer.close()
            os._exit(0)

    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock; the child only
        # runs the handler and never takes the parent's locks (no logging setup, no DB).
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=child, name=f"dj-job-{job.id}", daemon=True)
        proc.start()
    writer.close()
    try:
        if not reader.poll(run_time):
            proc.kill()
            proc.join(5)
            raise ProcessTimeout(
                f"execution expired: the job's process (pid {proc.pid}) ran past "
                f"max_run_time ({run_time:g}s) and was killed"
            )
        try:
            result = reader.recv()
        except EOFError:
            result = ("ChildDied", "the job's process exited without a result", "")
    finally:
        reader.close()
        proc.join(5)
    if result is None:
        return
    kind, message, trace = result
    if kind == "ChildDied" or proc.exitcode not in (0, None):
        raise ChildJobError(f"the job's process died (exit code {proc.exitcode})")
    if kind == "FailJob":
        raise FailJob(message)
    raise ChildJobError(message or kind, trace)


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


class Executor:
    def __init__(
        self,
        *,
        clock: Clock,
        watchdog: Watchdog,
        max_run_time: float,
        destroy_failed_jobs: bool,
    ) -> None:
        self.clock = clock
        self.watchdog = watchdog
        self.max_run_time = max_run_time
        self.destroy_failed_jobs = destroy_failed_jobs

    def run_time_for(self, spec: JobSpec) -> float:
        """The job's own max_run_time, capped at the worker's (Delayed::Backend::Base#max_run_time)."""
        if spec.max_run_time is None:
            return self.max_run_time
        return min(spec.max_run_time, self.max_run_time)

    def execute(self, job: Job, spec: JobSpec) -> Outcome:
        """Delayed::Backend::Base#invoke_job: before → run → success; error on raise; after always."""
        assert spec.run is not None
        run_time = self.run_time_for(spec)
        timer = self.watchdog.schedule(run_time, job.timed_out.set)
        error: BaseException | None = None
        try:
            try:
                _call(spec.hook("before"), job)
                if spec.timeout == "process":
                    run_in_child(spec.run, job, run_time)
                else:
                    spec.run(job)
                if job.timed_out.is_set():
                    raise JobTimeout.after(run_time)
                _call(spec.hook("success"), job)
            except BaseException as exc:  # Ruby's invoke_job rescues Exception: everything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = exc
                try:
                    _call(spec.hook("error"), job, exc)
                except Exception as hook_exc:
                    error = hook_exc
            finally:
                try:
                    _call(spec.hook("after"), job)
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    error = exc
        finally:
            self.watchdog.cancel(timer)
        if error is None:
            return Succeeded()
        if isinstance(error, JobTimeout) or job.timed_out.is_set():
            job.log.warning("job.timed_out", max_run_time=run_time)
        return self.failed_attempt(job, spec, error)

    def failed_attempt(self, job: Job, spec: JobSpec, error: BaseException) -> Outcome:
        """Delayed::Worker#reschedule: attempts + 1, then reschedule or fail for good."""
        attempts = job.attempts + 1
        last_error = format_error(error)
        if isinstance(error, FailJob) or attempts >= job.max_attempts:
            return self.fail(job, spec, error, attempts=attempts, last_error=last_error)
        now = self.clock.now()
        reschedule = spec.reschedule_at or default_reschedule_at
        try:
            run_at = reschedule(now, attempts)
            if not isinstance(run_at, datetime):
                raise TypeError(f"reschedule_at returned {type(run_at).__name__}, not a datetime")
        except Exception as exc:
            job.log.error("job.reschedule_at_failed", error=str(exc))
            run_at = default_reschedule_at(now, attempts)
        if run_at.tzinfo is not None:
            run_at = (run_at - run_at.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
        return Rescheduled(attempts=attempts, run_at=run_at, last_error=last_error)

    def fail(
        self, job: Job, spec: JobSpec | None, error: BaseException, *, attempts: int, last_error: str
    ) -> Failed:
        """Delayed::Worker#failed: the failure hook once (its errors only logged), then fail or destroy."""
        hook = spec.hook("failure") if spec is not None else None
        try:
            _call(hook, job, error)
        except Exception as exc:
            job.log.error("job.failure_hook_failed", error=f"{type(exc).__name__}: {exc}")
        destroy = self.destroy_failed_jobs
        if spec is not None and spec.destroy_failed_jobs is not None:
            destroy = spec.destroy_failed_jobs
        return Failed(attempts=attempts, last_error=last_error, destroy=destroy)


def _call(hook: Callable[..., Any] | None, *args: Any) -> None:
    if hook is not None:
        hook(*args)
