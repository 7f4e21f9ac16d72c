"""Writing a job's outcome: fenced by locked_by, retried while the database is away, and
logged once it is in the table (job.succeeded, job.rescheduled, job.failed, job.lock_lost)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace

import structlog
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.db import short_error
from dj_consumer.models import Failed, Interrupted, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.store import Store, is_transient

log = structlog.get_logger(__name__)


class Pending:
    """A success whose DELETE travels with the slot's next reserve; what its log line said."""

    __slots__ = ("duration_ms", "job", "logged")

    def __init__(self, job: Job, duration_ms: float) -> None:
        self.job, self.duration_ms = job, duration_ms
        self.logged: bool | None = None  # the `deleted` already logged, if any


class Recorder:
    def __init__(self, store: Store, clock: Clock, config: Config, stopping: threading.Event) -> None:
        self.store = store
        self.clock = clock
        self.config = config
        self.stopping = stopping

    def log_deleted(self, pending: Pending, deleted: bool) -> None:
        """job.succeeded once its DELETE is known (or job.lock_lost); each line once, however
        often a reserve that failed after the DELETE is retried."""
        if pending.logged is deleted:
            return
        pending.logged = deleted
        if deleted:
            self.log_outcome(pending.job, Succeeded(), pending.duration_ms)
        else:
            self.log_lock_lost(pending.job, Succeeded())

    def flush_deletes(self, done: list[tuple[Job, float]], me: str) -> None:
        if not done:
            return
        ids = [job.id for job, _ in done]
        while True:
            try:
                deleted = self.store.delete_many(ids, me)
                break
            except SQLAlchemyError as exc:
                log.error("db.unavailable", op="delete_many", error=short_error(exc), jobs=len(ids))
                if self.stopping.is_set():
                    log.error("job.outcome_unwritten", jobs=ids,
                              hint="these succeeded jobs stay locked and run again after the lock horizon")
                    return
                self.clock.sleep(max(self.config.sleep_delay, 0.5))
        for job, duration_ms in done:
            job.log.info("job.succeeded", duration_ms=duration_ms)
        if deleted != len(ids):
            log.warning("job.lock_lost", outcome="Succeeded", expected=len(ids), deleted=deleted,
                        hint="some rows were taken over or deleted meanwhile; left alone")

    def record(self, job: Job, outcome: Outcome, me: str, duration_ms: float, *,
               logged: bool = False) -> None:
        """Write the outcome, fenced by locked_by; keep trying while the database is away.
        `logged`: its log line is out already (a success logged while its reserve committed)."""
        waited_since: float | None = None
        while True:
            try:
                written = self.write(job, outcome, me)
                break
            except SQLAlchemyError as exc:
                if not is_transient(exc) and not isinstance(exc, DisconnectionError):
                    self.record_refused(job, outcome, me, exc)
                    return
                if waited_since is None:
                    waited_since = self.clock.monotonic()
                job.log.error("db.unavailable", op="record", error=short_error(exc),
                              outcome=type(outcome).__name__)
                grace = self.config.shutdown_timeout or 30.0
                if self.stopping.is_set() and self.clock.monotonic() - waited_since > grace:
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
        job.log.warning("job.lock_lost", outcome=type(outcome).__name__,
                        row_exists=exists, owner=owner,
                        hint="another worker holds the row now (or Rails deleted it); left alone")

    def record_refused(self, job: Job, outcome: Outcome, me: str, exc: SQLAlchemyError) -> None:
        """The database refused the outcome itself (not a passing fault), e.g. a last_error its
        column charset cannot hold. Retry once with a plain-ASCII last_error; failing that,
        unlock the row with attempts unchanged rather than hold it forever."""
        job.log.error("job.outcome_refused", error=short_error(exc), outcome=type(outcome).__name__)
        if isinstance(outcome, Rescheduled | Failed | Interrupted):
            plain = outcome.last_error.encode("ascii", "backslashreplace").decode("ascii")
            try:
                if self.write(job, replace(outcome, last_error=plain), me):
                    self.log_outcome(job, outcome, 0.0)
                    return
            except SQLAlchemyError as again:
                job.log.error("job.outcome_refused", error=short_error(again), retry="ascii")
        with contextlib.suppress(SQLAlchemyError):
            self.store.interrupt(job.id, me, now=self.clock.now(),
                                 last_error=f"dj_consumer could not write this job's outcome "
                                            f"({type(outcome).__name__}): {short_error(exc)}"[:1000])
        job.log.error("job.outcome_unwritten", outcome=type(outcome).__name__,
                      hint="the row was unlocked with attempts unchanged; it will run again")

    def owner(self, job_id: int) -> tuple[bool | None, str | None]:
        try:
            return self.store.owner(job_id)
        except SQLAlchemyError:
            return None, None

    def write(self, job: Job, outcome: Outcome, me: str) -> bool:
        now = self.clock.now()
        store = self.store
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
        if isinstance(outcome, Succeeded):
            job.log.info("job.succeeded", duration_ms=duration_ms)
        elif isinstance(outcome, Rescheduled):
            job.log.warning("job.rescheduled", duration_ms=duration_ms, attempts=outcome.attempts,
                            run_at=outcome.run_at.isoformat(sep=" "),
                            error=outcome.last_error.split("\n", 1)[0])
        elif isinstance(outcome, Failed):
            job.log.error("job.failed", duration_ms=duration_ms, attempts=outcome.attempts,
                          destroyed=outcome.destroy, error=outcome.last_error.split("\n", 1)[0])
        elif isinstance(outcome, Interrupted):
            job.log.warning("job.interrupted", duration_ms=duration_ms)
