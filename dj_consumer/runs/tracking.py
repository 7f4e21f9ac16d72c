"""The worker's side of run records (docs/runs.md "Job runs"): registered at start only when the
runs table exists (`attach`); without it nothing here runs and nothing is slower.

- An attempt begins: its record says `running` (one short autocommit statement; a record the
  database could not take then is created by the final write).
- While it runs: `j.report_progress` hands the numbers to one background thread that writes
  each job's latest at most every `run_progress_interval`; the heartbeat reads the jobs'
  cancel requests (one SELECT) and sets `j.cancelled` (and `j.timed_out`, which stops an
  `async` handler or a forked one); every hour it prunes old records in small batches.
- The outcome: an outcome participant (outcomes.py), so the record's final state, result and
  error — and a batch part's counts, and the batch's on_complete job — are written in the
  same transaction as the job's DELETE/UPDATE: a Rails reader never sees a deleted job
  without its final record. A cancelled job's row is deleted, attempts unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import TextClause
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.db import is_refusal, short_error
from dj_consumer.models import Failed, Interrupted, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.outcomes import Tx
from dj_consumer.runs import reporting
from dj_consumer.runs.batches import finish_batch_part, item_id
from dj_consumer.runs.records import PartSummary, result_json
from dj_consumer.runs.store import Bound, RunsStore, detect, payload_fields
from dj_consumer.store import Store

if TYPE_CHECKING:
    from dj_consumer.run import Flight

log = structlog.get_logger(__name__)

__all__ = ["RunRecords", "attach"]

#: How often a worker prunes records older than run_retention (and once soon after start).
PRUNE_EVERY = 3600.0
#: The message of a cancelled attempt (timed_out's reason, the record's error_message).
CANCELLED = "cancelled"

Progress = tuple[int, int | None, str | None]


def attach(store: Store, config: Config, clock: Clock) -> RunRecords | None:
    """The run records of the worker's database, or None when the runs table is absent.
    A user granted the jobs table only is refused even a look at the runs table on MySQL
    (1142, not 'no such table'): no run records then, one warning, the jobs still run."""
    try:
        with store.engine.connect() as conn:
            runs = detect(conn, runs_table=config.runs_table, table_name=config.table_name,
                          batches_table=config.batches_table)
    except SQLAlchemyError as exc:
        if not is_refusal(exc):
            raise
        log.warning("run.records_off", runs_table=config.runs_table, error=short_error(exc),
                    hint="the database user may not read the runs table: no run records")
        return None
    if runs is None:
        return None
    return RunRecords(store, runs, config, clock)


class RunRecords:
    """Writes the run records of the jobs a worker runs (an outcome participant)."""

    def __init__(self, store: Store, runs: RunsStore, config: Config, clock: Clock) -> None:
        self.store, self.runs, self.config, self.clock = store, runs, config, clock
        self.writer = RecordWriter(self._write_start, self._write_progress,
                                   config.run_progress_interval)
        self._pruned_at: float | None = None

    def close(self) -> None:
        self.writer.stop()

    # -- an attempt ---------------------------------------------------------------------------

    def attempt(self, job: Job, execute: Callable[[], Outcome]) -> Outcome:
        """Run one attempt with its record: `running` (written by the background writer, or
        with the final state when the attempt ends first), progress and checkpoints."""
        job.attempt.sink = _Sink(self, job.id)
        self.writer.start(job, self.clock.now())
        with reporting.reporting(_Reporter(self, job)):
            outcome = execute()
        # Taken here, outside any transaction: on SQLite the writer's own write would wait for
        # the outcome's write lock while the outcome waited for it.
        self._unstarted(job)
        return outcome

    def _write_start(self, job: Job, started: datetime) -> None:
        with self.store.db.connection() as conn:
            self.runs.start(conn, job, started)

    def _write_progress(self, job_id: int, progress: Progress) -> None:
        with self.store.db.connection() as conn:
            self.runs.progress(conn, job_id, *progress, now=self.clock.now())

    def _unstarted(self, job: Job) -> datetime | None:
        """When the attempt began, if its `running` write has not gone out (then the final
        write carries it): taken from the writer once, kept for a retried transaction."""
        taken = self.writer.take_start(job.id)
        if taken is not None:
            job.attempt.unstarted = taken
        return job.attempt.unstarted  # type: ignore[no-any-return]

    # -- the outcome (outcomes.Participant) -----------------------------------------------

    def claims(self, job: Job) -> bool:
        return True

    def instead(self, tx: Tx, job: Job, outcome: Outcome) -> bool | None:
        """A cancelled attempt: the row is deleted (attempts unchanged), fenced by locked_by."""
        if not job.cancelled or isinstance(outcome, Interrupted):
            return None
        sql = tx.store.sql
        return bool(tx.execute(sql.delete, {"id": job.id, "me": tx.me}).rowcount == 1)

    def also(self, tx: Tx, job: Job, outcome: Outcome, written: bool) -> None:
        started = self._unstarted(job)
        if not written:
            return  # another worker holds the row (or Rails deleted it): not our record now
        if started is not None:
            self.runs.start(tx.conn, job, started)
        state, attempts, error = _final(job, outcome)
        held = self.writer.take(job.id)
        if held is not None:  # the last report, before the record stops taking reports
            self.runs.progress(tx.conn, job.id, *held, now=tx.now)
        batch = payload_fields(job.payload)
        part = batch["run_batch_id"] is not None and batch["run_batch_index"] is not None
        summary = self._summary(job, state, error) if part else None
        self.runs.finish(tx.conn, job.id, state, attempts=attempts, now=tx.now,
                         result=_result(job, outcome, state, summary), error=error,
                         name=job.name, queue=job.queue)
        if summary is not None and state in ("succeeded", "failed", "cancelled") \
                and self.runs.has_batches:
            finish_batch_part(tx.conn, self.runs, str(batch["run_batch_id"]),
                              int(batch["run_batch_index"]), summary, now=tx.now, job_id=job.id)

    def scripted(self, job: Job, outcome: Succeeded,
                 now: datetime) -> tuple[list[TextClause], dict[str, Any]] | None:
        """MySQL: a plain success's record (its `running` write too, when it had not gone
        out) follows its DELETE in one round trip (outcomes.Scripted, runs/sql.py); a batch
        part, a cancel or a held progress report take the transaction of `also` instead."""
        if not self._plain_success(job):
            return None
        bound = self.runs.succeeded_if_deleted(
            job, now=now, result=_result(job, outcome, "succeeded", None),
            started=self._unstarted(job))
        return [bound.stmt], bound.params

    def _plain_success(self, job: Job) -> bool:
        """Not cancelled, no progress report held back, not a batch part: a success whose
        record is its final write alone (the one-statement paths)."""
        if job.cancelled or self.writer.holds(job.id):
            return False
        if isinstance(job.payload, dict) and "batch_id" in job.payload:
            batch = payload_fields(job.payload)
            return batch["run_batch_id"] is None or batch["run_batch_index"] is None
        return True

    def _summary(self, job: Job, state: str, error: BaseException | str | None) -> PartSummary:
        """A batch part's counts: what j.track counted; items it never reached are processed
        when the part succeeded, errored when it failed for good or was cancelled."""
        items = job.payload.get("items") if isinstance(job.payload, dict) else None
        summary = _tallied(job)
        rest = job.attempt.untouched(items if isinstance(items, list) else [])
        if state == "succeeded":
            summary.processed += len(rest)
        else:
            message = CANCELLED if state == "cancelled" else _message(error)
            for item in rest:
                summary.error(item_id(item), message)
        return summary

    def succeeded_statement(self, job: Job, outcome: Succeeded, me: str,
                            now: datetime) -> Bound | None:
        """PostgreSQL: a plain success's DELETE and final record as one statement
        (outcomes.Scripted); None as for `scripted`."""
        if not self._plain_success(job):
            return None
        bound = self.runs.pg_succeeded(job, owned=self.store.sql.owned, now=now,
                                       result=_result(job, outcome, "succeeded", None),
                                       started=self._unstarted(job))
        bound.params.update(id=job.id, me=me)
        return bound

    # -- the heartbeat ---------------------------------------------------------------------------

    def beat(self, flights: Sequence[Flight]) -> None:
        """On the heartbeat thread: the in-flight jobs' cancel requests; now and then, prune."""
        jobs = {f.job.id: f.job for f in flights if not f.job.cancelled}
        if jobs:
            try:
                with self.store.db.connection() as conn:
                    asked = self.runs.cancel_requested(conn, jobs)
            except SQLAlchemyError as exc:
                log.error("db.unavailable", op="cancel_requested", error=short_error(exc))
                asked = set()
            for job_id in asked:
                job = jobs[job_id]
                job.log.warning("job.cancel_requested",
                                hint="j.cancelled and j.timed_out are set; the job's row is "
                                     "deleted when the handler returns")
                job.cancelled.set()
                job.timed_out.stop(CANCELLED)
        now = self.clock.monotonic()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.prune()

    def prune(self) -> int:
        """Records (and completed batches) older than run_retention, in small batches."""
        try:
            with self.store.db.connection() as conn:
                removed = self.runs.prune(conn, now=self.clock.now(),
                                          retention=self.config.run_retention)
        except SQLAlchemyError as exc:
            log.error("db.unavailable", op="prune_runs", error=short_error(exc))
            return 0
        if removed:
            log.info("runs.pruned", removed=removed, retention_s=self.config.run_retention)
        return removed


def _final(job: Job, outcome: Outcome) -> tuple[str, int, BaseException | str | None]:
    """(state, attempts, error) of the record for this outcome."""
    if job.cancelled and not isinstance(outcome, Interrupted):
        return "cancelled", job.attempts, CANCELLED
    if isinstance(outcome, Succeeded):
        return "succeeded", job.attempts, None
    if isinstance(outcome, Rescheduled):
        return "rescheduled", outcome.attempts, outcome.error or outcome.last_error
    if isinstance(outcome, Failed):
        return "failed", outcome.attempts, outcome.error or outcome.last_error
    return "interrupted", job.attempts, outcome.last_error


def _result(job: Job, outcome: Outcome, state: str, summary: PartSummary | None) -> str | None:
    """The record's result: the handler's return value (JSON text), else, for a successful
    batch part or a handler that tracked items, their counts."""
    result = job.attempt.result if isinstance(outcome, Succeeded) else None
    if isinstance(result, str) or state != "succeeded":
        return result if isinstance(result, str) else None
    if summary is not None:
        return result_json(summary_dict(summary))
    if job.attempt.tracking:
        return result_json(summary_dict(_tallied(job)))
    return None


def _tallied(job: Job) -> PartSummary:
    a = job.attempt
    summary = PartSummary(processed=a.processed, skipped=a.skipped)
    for item, message in a.errored:
        summary.error(item_id(item), message)
    return summary


def summary_dict(summary: PartSummary) -> dict[str, Any]:
    return {"processed": summary.processed, "skipped": summary.skipped,
            "errored": len(summary.errored),
            "errors": [{"id": e.id, "message": e.message} for e in summary.errored[:100]]}


def _message(error: BaseException | str | None) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return (error or "failed").split("\n", 1)[0]


class _Sink:
    """What an attempt's reports do with a run record (attempt.Sink)."""

    __slots__ = ("job_id", "records")

    def __init__(self, records: RunRecords, job_id: int) -> None:
        self.records, self.job_id = records, job_id

    def progress(self, current: int, total: int | None, stage: str | None) -> None:
        self.records.writer.report(self.job_id, (current, total, stage))

    def result(self, value: Any) -> Any:
        return result_json(value)


class _Reporter:
    """reporting.RunReporter for a handler the worker runs (contrib.http_steps)."""

    def __init__(self, records: RunRecords, job: Job) -> None:
        self.records, self.job = records, job

    def progress(self, current: int, total: int | None = None, stage: str | None = None) -> None:
        self.records.writer.report(self.job.id, (int(current), total, stage))

    def checkpoint(self) -> Any:
        r = self.records
        with r.store.db.connection() as conn:
            run = r.runs.get(conn, self.job.id)
        return None if run is None else run.checkpoint

    def save_checkpoint(self, data: Any) -> None:
        """Written before it returns, with the record's `running` write if that had not gone
        out yet (the checkpoint needs the record)."""
        r = self.records
        started = r._unstarted(self.job)
        r.store.db.retrying("run_checkpoint", lambda: self._save(data, started))
        self.job.attempt.unstarted = None

    def _save(self, data: Any, started: datetime | None) -> None:
        r = self.records
        with r.store.db.connection() as conn:
            if started is not None:
                r.runs.start(conn, self.job, started)
            r.runs.save_checkpoint(conn, self.job.id, data, now=r.clock.now())


class RecordWriter:
    """One thread that writes what an attempt reports without making it wait: its `running`
    record, and each job's latest progress, at most every `interval` seconds. What it has not
    written when the attempt ends is taken by the final write (take_start, take), which waits
    for a write of that job in progress, so a `running` never lands after the final state."""

    def __init__(self, write_start: Callable[[Job, datetime], None],
                 write_progress: Callable[[int, Progress], None], interval: float) -> None:
        self._write_start, self._write = write_start, write_progress
        self.interval = interval
        self._starts: dict[int, tuple[Job, datetime]] = {}
        self._pending: dict[int, Progress] = {}
        self._writing: set[int] = set()  # jobs whose start this thread is writing now
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, job: Job, started: datetime) -> None:
        with self._cond:
            self._starts[job.id] = (job, started)
            self._ensure_thread()

    def report(self, job_id: int, progress: Progress) -> None:
        with self._cond:
            old = self._pending.get(job_id)
            if old is not None:  # None keeps a total or stage reported since the last write
                progress = (progress[0], progress[1] if progress[1] is not None else old[1],
                            progress[2] if progress[2] is not None else old[2])
            self._pending[job_id] = progress
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._loop, name="dj-run-records",
                                            daemon=True)
            self._thread.start()

    def holds(self, job_id: int) -> bool:
        with self._cond:
            return job_id in self._pending

    def take_start(self, job_id: int) -> datetime | None:
        """The attempt's start time if its `running` write has not gone out (it never will:
        the caller writes it), after any write of it in progress is done."""
        with self._cond:
            while job_id in self._writing:
                self._cond.wait()
            entry = self._starts.pop(job_id, None)
        return None if entry is None else entry[1]

    def take(self, job_id: int) -> Progress | None:
        """The report not written yet (the outcome's transaction writes it)."""
        with self._cond:
            return self._pending.pop(job_id, None)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._stopping:
                    self._cond.wait(self.interval)
                starts, self._starts = self._starts, {}
                progress, self._pending = self._pending, {}
                self._writing.update(starts)
                stopping = self._stopping
            for job_id, (job, started) in starts.items():
                try:
                    self._write_start(job, started)
                except Exception as exc:  # the final write creates the record anyway
                    log.warning("run.start_unwritten", job_id=job_id, error=short_error(exc))
                finally:
                    with self._cond:
                        self._writing.discard(job_id)
                        self._cond.notify_all()
            for job_id, report in progress.items():
                try:
                    self._write(job_id, report)
                except Exception as exc:  # progress is best effort; the next report retries
                    log.warning("run.progress_unwritten", job_id=job_id, error=short_error(exc))
            if stopping:
                return
