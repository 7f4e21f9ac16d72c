"""One attempt of one job: hooks in Ruby's order, exception → Outcome. The deadline that
sets timed_out is deadlines.py; the forked runner (timeout="process") forked.py.

No SQL here: the worker writes whatever Outcome this returns.
"""


from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from dj_consumer.clock import Clock
from dj_consumer.coroutines import Cancelled, Loops
from dj_consumer.deadlines import Expired, Watchdog, timeout_error
from dj_consumer.errors import FailJob, JobTimeout, exception_class, format_error
from dj_consumer.forked import run_in_child
from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.registry import JobSpec

log = structlog.get_logger(__name__)


def default_reschedule_at(now: datetime, attempts: int) -> datetime:
    """Delayed::Backend::Base#reschedule_at: now + attempts**4 + 5 seconds."""
    return now + timedelta(seconds=attempts**4 + 5)


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
        expired = Expired(job)  # max_run_time itself, not another reason for timed_out
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
                    raise timeout_error(job, run_time, expired)
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

    def _run(self, fn: Callable[..., Any], job: Job, run_time: float, expired: Expired) -> Any:
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
              expired: Expired) -> Any:
        """The work of the attempt (before, run, success): a coroutine is cancelled when
        j.timed_out is set, and that is a timeout."""
        if fn is None:
            return None
        try:
            return self.loops.call(fn, job, cancellable=True)
        except Cancelled:
            raise timeout_error(job, run_time, expired) from None

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
                              error_class=exception_class(exc),
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


__all__ = ["Executor", "Watchdog", "default_reschedule_at", "format_error"]
