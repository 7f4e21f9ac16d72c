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
from dj_consumer.coroutines import Cancelled, Loops, run_to_end
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


def run_in_child(fn: Callable[[Job], Any], job: Job, run_time: float) -> Any:
    """timeout="process": run `fn(job)` in a forked child that is killed at run_time.

    fork, not spawn: the child inherits the registry and the job as they are, without
    pickling. It never touches the parent's database connections and leaves with os._exit.
    """
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def child() -> None:
        reader.close()
        try:
            value = run_to_end(fn(job))
            try:
                writer.send(("ok", value))
            except Exception as exc:  # it cannot be pickled: the attempt fails, saying why
                writer.send(("ResultError", "the job's return value cannot leave its process "
                             f"({type(value).__name__}: {exc})", ""))
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
        return None
    if result[0] == "ok":
        return result[1]
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
        self.loops = Loops()

    def run_time_for(self, spec: JobSpec) -> float:
        """The job's own max_run_time, capped at the worker's (Delayed::Backend::Base#max_run_time)."""
        if spec.max_run_time is None:
            return self.max_run_time
        return min(spec.max_run_time, self.max_run_time)

    def execute(self, job: Job, spec: JobSpec) -> Outcome:
        """Delayed::Backend::Base#invoke_job: before → run → success; error on raise; after always.

        A hook's own exception never replaces the job's: it is logged and appended to
        last_error (an `after` hook that raises still fails an attempt that succeeded, as the
        `ensure` in Ruby's invoke_job does)."""
        assert spec.run is not None
        run_time = self.run_time_for(spec)
        expired = _Expired(job)  # max_run_time itself, not another reason for timed_out
        timer = self.watchdog.schedule(run_time, expired)
        error: BaseException | None = None
        notes: list[str] = []  # what hooks raised after the job's own error
        give_up = False  # a hook raised FailJob after the job's own error
        returned_late = False  # the handler returned although timed_out was set
        try:
            try:
                for before in spec.hooks_for("before"):
                    self._call(before, job, run_time, expired)
                if spec.timeout == "process":
                    value = run_in_child(spec.run, job, run_time)
                else:
                    value = self._run(spec.run, job, run_time, expired)
                if job.timed_out.is_set():
                    returned_late = True  # it ignored timed_out: its work does not count
                    raise _timeout(job, run_time, expired)
                job.attempt.keep_result(value)  # a result a run record cannot hold: a failure
                for success in spec.hooks_for("success"):
                    self._call(success, job, run_time, expired)
            except BaseException as exc:  # Ruby's invoke_job rescues Exception: everything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = exc
                give_up = self._hook(spec, "error", job, notes, exc)
            finally:
                afters = spec.hooks_for("after")
                if error is not None:
                    give_up = self._hook(spec, "after", job, notes) or give_up
                for index, after in enumerate(afters if error is None else ()):
                    try:
                        self.loops.call(after, job, cancellable=False)
                    except BaseException as exc:
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        error = exc  # the attempt fails; the other after hooks still run
                        give_up = self._hook(spec, "after", job, notes,
                                             only=afters[index + 1:]) or give_up
                        break
        finally:
            self.watchdog.cancel(timer)
        if error is None:
            return Succeeded(job.attempt.result)
        outcome = self.failed_attempt(job, spec, error, notes, give_up=give_up)
        if isinstance(error, JobTimeout) or job.timed_out.is_set():
            then = "retried" if isinstance(outcome, Rescheduled) else "failed for good"
            if returned_late:
                job.log.warning(
                    "job.timed_out", max_run_time=run_time, returned=True, then=then,
                    hint=f"the handler returned after j.timed_out was set: the attempt counts "
                         f"as failed, whatever it did, and the job will be {then} "
                         "(its work is retried); check j.timed_out and stop early")
            else:
                job.log.warning("job.timed_out", max_run_time=run_time, then=then)
        return outcome

    def _run(self, fn: Callable[..., Any], job: Job, run_time: float, expired: _Expired) -> Any:
        """The handler; called again when an item of its `j.track` loop raised and errors
        are to continue (the loop resumes after that item)."""
        while True:
            try:
                return self._call(fn, job, run_time, expired)
            except Exception as exc:
                if job.timed_out.is_set() or not job.attempt.item_failed(exc):
                    raise
                job.log.warning("job.item_failed", error=f"{type(exc).__name__}: {exc}"[:500],
                                hint="counted as errored; the handler goes on after it")

    def _call(self, fn: Callable[..., Any] | None, job: Job, run_time: float,
              expired: _Expired) -> Any:
        """The work of the attempt (before, run, success): a coroutine is cancelled when
        j.timed_out is set, and that is a timeout."""
        if fn is None:
            return None
        try:
            return self.loops.call(fn, job, cancellable=True)
        except Cancelled:
            raise _timeout(job, run_time, expired) from None

    def _hook(self, spec: JobSpec | None, kind: str, job: Job, notes: list[str],
              *args: Any, only: tuple[Callable[..., Any], ...] | None = None) -> bool:
        """The hooks of `kind` (the job's own and the global one) after the job failed: their
        own exceptions are logged and noted, never raised. True if one raised FailJob (the job
        then fails for good, with its own error). `only`: these hooks instead."""
        hooks = only if only is not None else spec.hooks_for(kind) if spec is not None else ()
        give_up = False
        for hook in hooks:
            try:
                self.loops.call(hook, job, *args, cancellable=False)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                job.log.error("job.hook_failed", hook=kind, error=f"{type(exc).__name__}: {exc}",
                              error_class=type(exc).__name__,
                              hint="logged and appended to last_error; the job's own error stands")
                notes.append(f"{kind} hook raised {type(exc).__name__}: {exc}\n"
                             + format_error(exc).split("\n", 1)[1])
                give_up = give_up or isinstance(exc, FailJob)
        return give_up

    def close_loop(self) -> None:
        """Close the calling thread's event loop (a slot thread that ends, or work_off)."""
        self.loops.close_current()

    def failed_attempt(self, job: Job, spec: JobSpec, error: BaseException,
                       notes: list[str] | None = None, *, give_up: bool = False) -> Outcome:
        """Delayed::Worker#reschedule: attempts + 1, then reschedule or fail for good.
        `notes`: what hooks raised meanwhile, appended to last_error."""
        attempts = job.attempts + 1
        last_error = "\n".join([format_error(error), *(notes or ())])
        if give_up or isinstance(error, FailJob) or attempts >= job.max_attempts:
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
        return Rescheduled(attempts=attempts, run_at=run_at, last_error=last_error, error=error)

    def fail(
        self, job: Job, spec: JobSpec | None, error: BaseException, *, attempts: int, last_error: str
    ) -> Failed:
        """Delayed::Worker#failed: the failure hook once (its errors logged and appended to
        last_error), then fail or destroy."""
        notes: list[str] = []
        self._hook(spec, "failure", job, notes, error)
        last_error = "\n".join([last_error, *notes])
        destroy = self.destroy_failed_jobs
        if spec is not None and spec.destroy_failed_jobs is not None:
            destroy = spec.destroy_failed_jobs
        return Failed(attempts=attempts, last_error=last_error, destroy=destroy, error=error)


class _Expired:
    """The watchdog's action at max_run_time: set timed_out, and remember that this was why."""

    __slots__ = ("fired", "job")

    def __init__(self, job: Job) -> None:
        self.job, self.fired = job, False

    def __call__(self) -> None:
        self.fired = True
        self.job.timed_out.set()


def _timeout(job: Job, run_time: float, expired: _Expired) -> JobTimeout:
    """The error of an attempt that ended with timed_out set: max_run_time, or another reason."""
    reason = job.timed_out.reason
    if expired.fired or reason is None:
        return JobTimeout.after(run_time)
    return JobTimeout(f"stopped before max_run_time: {reason}")
