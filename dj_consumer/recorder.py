"""Writing a job's outcome: fenced by locked_by, retried while the database is away, and
logged once it is in the table (job.succeeded, job.rescheduled, job.failed, job.lock_lost).

An outcome the database refuses for good (not a passing fault) never sends the job straight
back to run: a success stays locked and stops the worker (an unlocked success runs again); a
failed attempt is written with a plainer last_error, else unlocked with attempts unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import structlog
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.db import short_error
from dj_consumer.errors import exception_class
from dj_consumer.events import Observer
from dj_consumer.models import Failed, Interrupted, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.outcomes import Outcomes
from dj_consumer.run import Deferred, Extra, Run
from dj_consumer.store import Store, is_transient

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Further tries of a success's DELETE that failed other than by a passing fault.
DELETE_TRIES = 3

__all__ = ["Deferred", "Recorder"]


def passing(exc: BaseException) -> bool:
    """A fault a later try can cure (the database is away, a lock wait), not a refusal."""
    return isinstance(exc, SQLAlchemyError) and (
        is_transient(exc) or isinstance(exc, DisconnectionError))


class Recorder:
    observer = Observer()  # the worker's (dj_consumer.events)

    def __init__(self, store: Store, clock: Clock, config: Config,
                 on_fatal: Callable[[str], None], outcomes: Outcomes | None = None) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.on_fatal = on_fatal  # the worker cannot do its work: stop it, exit non-zero
        self.outcomes = outcomes if outcomes is not None else Outcomes(store)

    def claims(self, job: Job) -> bool:
        """Does an outcome participant act on this job (outcomes.py)? Its success is then
        written by record() at once, never folded into the next reserve nor batched."""
        return bool(self.outcomes.participants) and self.outcomes.claims(job)

    def rides(self, job: Job, outcome: Succeeded) -> Extra | None:
        """A claimed success's participant statements, when they can travel with its DELETE
        in the next reserve (Outcomes.rides); None: record it now."""
        return self.outcomes.rides(job, outcome, self.clock.now())

    def settle(self, finished: Deferred) -> None:
        """A success deleted with the slot's next reserve, once its DELETE is known:
        job.succeeded, or job.lock_lost when the row was no longer ours (Deferred.on_settled:
        once per Deferred)."""
        if finished.deleted:
            self.log_outcome(finished.job, Succeeded(), finished.duration_ms)
        else:
            self.log_lock_lost(finished.job, Succeeded())

    def flush_deletes(self, run: Run, done: list[tuple[Job, float]], me: str) -> None:
        """Delete a batch's successes together; what cannot be deleted is never unlocked."""
        if not done:
            return
        ids = [job.id for job, _ in done]
        while True:
            try:
                deleted = self.store.delete_many(ids, me)
                break
            except Exception as exc:
                if not passing(exc):
                    again = self._delete_again(lambda: self.store.delete_many(ids, me))
                    if isinstance(again, int):
                        deleted = again
                        break
                    run.keep_locked.update(ids)
                    self._delete_refused(ids, again)
                    return
                log.error("db.unavailable", op="delete_many", error=short_error(exc), jobs=len(ids))
                if run.stopping.is_set():
                    run.keep_locked.update(ids)
                    log.error("job.outcome_unwritten", jobs=ids,
                              hint="these succeeded jobs stay locked and run again after the lock horizon")
                    return
                self.clock.sleep(max(self.config.sleep_delay, 0.5))
        for i, (job, duration_ms) in enumerate(done):
            job.log.info("job.succeeded", duration_ms=duration_ms)
            self.observer.outcome(job, Succeeded(), lost=i >= deleted)
        if deleted != len(ids):
            log.warning("job.lock_lost", outcome="Succeeded", expected=len(ids), deleted=deleted,
                        hint="some rows were taken over or deleted meanwhile; left alone")

    def record(self, run: Run, job: Job, outcome: Outcome, me: str, duration_ms: float, *,
               logged: bool = False) -> None:
        """Write the outcome, fenced by locked_by; keep trying while the database is away.
        `logged`: its log line is out already (a Deferred settled by a reserve that failed)."""
        waited_since: float | None = None
        while True:
            try:
                written = self.write(job, outcome, me)
                break
            except Exception as exc:  # a driver's UnicodeEncodeError is a refusal too
                if not passing(exc):
                    self.record_refused(run, job, outcome, me, exc)
                    return
                if waited_since is None:
                    waited_since = self.clock.monotonic()
                job.log.error("db.unavailable", op="record", error=short_error(exc),
                              outcome=type(outcome).__name__)
                grace = self.config.shutdown_timeout or 30.0
                if run.closed or (run.stopping.is_set()
                                  and self.clock.monotonic() - waited_since > grace):
                    if isinstance(outcome, Succeeded):
                        run.keep_locked.add(job.id)
                    job.log.error("job.outcome_unwritten", outcome=type(outcome).__name__,
                                  hint="the row stays locked; it runs again after the lock horizon")
                    return
                self.clock.sleep(max(self.config.sleep_delay, 0.5))
        if not written:
            self.log_lock_lost(job, outcome)
            return
        if not logged:
            self.log_outcome(job, outcome, duration_ms)

    def log_lock_lost(self, job: Job, outcome: Outcome) -> None:
        """A fenced outcome write touched nothing: say who holds the row now."""
        exists, owner = self.owner(job.id)
        self.observer.outcome(job, outcome, lost=True)
        job.log.warning("job.lock_lost", outcome=type(outcome).__name__,
                        row_exists=exists, owner=owner,
                        hint="another worker holds the row now (or Rails deleted it); left alone")

    def record_refused(self, run: Run, job: Job, outcome: Outcome, me: str,
                       exc: BaseException) -> None:
        """The database (or the driver) refused the outcome itself, not a passing fault."""
        job.log.error("job.outcome_refused", error=short_error(exc), outcome=type(outcome).__name__)
        if isinstance(outcome, Succeeded):
            again = self._delete_again(lambda: self.write(job, outcome, me))
            if isinstance(again, bool):
                if again:
                    self.log_outcome(job, outcome, 0.0)
                else:
                    self.log_lock_lost(job, outcome)
                return
            run.keep_locked.add(job.id)
            self._delete_refused([job.id], again)
            return
        if isinstance(outcome, Failed) and outcome.destroy:
            outcome = replace(outcome, destroy=False)  # kept with failed_at: it never reruns
        reason = short_error(exc).encode("ascii", "backslashreplace").decode("ascii")
        for last_error in (_ascii(outcome.last_error),
                           f"dj_consumer could not write this job's error: {reason}"[:1000]):
            try:
                if self.write(job, replace(outcome, last_error=last_error), me):
                    self.log_outcome(job, outcome, 0.0)
                else:
                    self.log_lock_lost(job, outcome)
                return
            except Exception as again:
                job.log.error("job.outcome_refused", error=short_error(again), retry="plain")
        try:
            # The table takes no UPDATE of ours at all: hand the row back if even that works.
            self.store.interrupt(job.id, me, now=self.clock.now(),
                                 last_error=f"dj_consumer could not write this job's outcome "
                                            f"({type(outcome).__name__}): {reason}"[:1000])
        except Exception as again:
            job.log.error("job.outcome_refused", error=short_error(again), retry="unlock")
        job.log.error("job.outcome_unwritten", outcome=type(outcome).__name__,
                      hint="the row was unlocked with attempts unchanged, if the database let us")

    def _delete_again(self, delete: Callable[[], T]) -> T | BaseException:
        """A DELETE carries no text of ours: one that fails other than by a passing fault is
        tried DELETE_TRIES more times before it counts as refused for good (a driver's
        one-off error must not stop the worker); the answer, or the last error."""
        error: BaseException = RuntimeError("not tried")
        for attempt in range(1, DELETE_TRIES + 1):
            self.clock.sleep(0.1 * attempt)
            try:
                return delete()
            except Exception as exc:
                error = exc
        return error

    def _delete_refused(self, ids: list[int], exc: BaseException) -> None:
        """A success whose DELETE is refused for good must not be unlocked (it would run
        again, and again): it stays locked, and a worker that cannot delete stops."""
        log.error("job.delete_refused", jobs=ids, error=short_error(exc),
                  hint="these jobs succeeded; they stay locked by this worker so they do not "
                       "run again. Grant DELETE on the table and delete or unlock them")
        self.on_fatal(f"the database refused to delete succeeded job(s) {ids} "
                      f"({short_error(exc)}); they stay locked so they do not run again")

    def owner(self, job_id: int) -> tuple[bool | None, str | None]:
        try:
            return self.store.owner(job_id)
        except SQLAlchemyError:
            return None, None

    def write(self, job: Job, outcome: Outcome, me: str) -> bool:
        now = self.clock.now()
        store = self.store
        if self.outcomes.participants and self.outcomes.claims(job):
            return self.outcomes.write(job, outcome, me, now)
        if isinstance(outcome, Succeeded):
            return store.delete(job.id, me)
        if isinstance(outcome, Rescheduled):
            return store.reschedule(job.id, me, attempts=outcome.attempts, run_at=outcome.run_at,
                                    last_error=outcome.last_error, now=now)
        if isinstance(outcome, Failed):
            if outcome.destroy:
                return store.delete(job.id, me)
            return store.fail(job.id, me, attempts=outcome.attempts,
                              last_error=outcome.last_error, now=now)
        return store.interrupt(job.id, me, last_error=outcome.last_error, now=now)

    def log_outcome(self, job: Job, outcome: Outcome, duration_ms: float) -> None:
        self.observer.outcome(job, outcome)
        if isinstance(outcome, Succeeded):
            job.log.info("job.succeeded", duration_ms=duration_ms, **job.attempt.log_fields())
        elif isinstance(outcome, Rescheduled):
            job.log.warning("job.rescheduled", duration_ms=duration_ms, attempts=outcome.attempts,
                            run_at=outcome.run_at.isoformat(sep=" "),
                            **error_fields(outcome.last_error, outcome.error))
        elif isinstance(outcome, Failed):
            job.log.error("job.failed", duration_ms=duration_ms, attempts=outcome.attempts,
                          destroyed=outcome.destroy,
                          **error_fields(outcome.last_error, outcome.error))
        elif isinstance(outcome, Interrupted):
            job.log.warning("job.interrupted", duration_ms=duration_ms)


#: The `error` field of job.rescheduled / job.failed is clipped to this many characters (the
#: whole message and traceback are in last_error, and in JSON logs in `exception`).
ERROR_CLIP = 500


def error_fields(last_error: str, error: BaseException | None) -> dict[str, Any]:
    """`error_class`, `error` (last_error's first line without the class, clipped) and
    `exc_info` (rendered as the traceback by structlog's format_exc_info in JSON logs; the
    console drops it)."""
    message = last_error.split("\n", 1)[0]
    if error is not None:  # the message alone: error_class names the class
        message = message.removeprefix(exception_class(error) + ": ")
    if len(message) > ERROR_CLIP:
        message = message[:ERROR_CLIP] + f"… ({len(message)} chars)"
    fields: dict[str, Any] = {"error": message}
    if error is not None:
        fields["error_class"] = exception_class(error)
        fields["exc_info"] = error
    return fields


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")
