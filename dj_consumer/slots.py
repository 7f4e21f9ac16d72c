"""The slots: poll → reserve → parse → execute → record, one job (or one batch) at a time.

Every statement a slot sends goes through its run's gate (run.py), so a closed run's slot
threads never reserve, run or write again.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from functools import partial

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer import ruby_yaml
from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.db import is_refusal, short_error
from dj_consumer.errors import HandlerParseError, format_error
from dj_consumer.events import Observer, Poll
from dj_consumer.executor import Executor
from dj_consumer.heartbeat import Heartbeat
from dj_consumer.models import Job, JobRow, Outcome, ParsedHandler, Succeeded
from dj_consumer.recorder import Recorder
from dj_consumer.registry import JobSpec, Registry
from dj_consumer.run import Batch, Deferred, Flight, Run
from dj_consumer.store import Store
from dj_consumer.wakeup import Wakeup

log = structlog.get_logger("dj_consumer.worker")

class Idle(enum.Enum):
    """Why run_next ran no job."""

    NOTHING = "nothing ready"  # exit_on_complete may return
    UNAVAILABLE = "database unavailable"  # never read as "nothing left to run"


#: What run_next reports: (succeeded, failed) of the jobs it ran, or why it ran none.
RunResult = tuple[int, int] | Idle
#: A reserved row's handler, parsed (or why it could not be).
Parsed = ParsedHandler | HandlerParseError
#: A database that refuses every reserve (bad password, no privileges, missing table) this
#: long, and this many times in a row, stops the worker with FatalError (exit non-zero).
REFUSED_FOR = 60.0
REFUSED_TIMES = 10


class Slots:
    """What every slot thread of a worker runs (and work_off, in the caller's thread)."""

    observer = Observer()  # the worker's (dj_consumer.events)

    def __init__(self, config: Config, registry: Registry, clock: Clock, store: Store,
                 executor: Executor, recorder: Recorder, heartbeat: Heartbeat,
                 fatal_stop: Callable[[str], None]) -> None:
        self.config, self.registry, self.clock, self.store = config, registry, clock, store
        self.executor, self.recorder, self.heartbeat = executor, recorder, heartbeat
        self.fatal_stop = fatal_stop
        self.refusals = Refusals(clock)
        self.wakeup = Wakeup(config, store, clock)

    def loop(self, run: Run, me: str) -> None:
        try:
            while not run.stopping.is_set():
                self.wakeup.arm(me)
                try:
                    result = self.run_next(run, me, self.config.reserve_batch)
                except Exception:  # a bug of ours must not silently end the slot
                    log.exception("worker.slot_error", worker=me, hint="the slot goes on")
                    result = Idle.UNAVAILABLE
                if result is Idle.UNAVAILABLE:
                    # Not "nothing left": exit_on_complete waits for the database to return.
                    self.clock.sleep(max(self.config.sleep_delay, 0.5), run.stopping)
                    continue
                if result is not Idle.NOTHING:
                    continue
                if self.config.exit_on_complete:
                    return
                if not run.stopping.is_set():
                    # The next run_at is a query: asked through the gate, never once the run
                    # closed (start() may have returned meanwhile).
                    with run.gate(me) as open_:
                        pause = self.wakeup.delay() if open_ else None
                    if pause is not None:
                        self.wakeup.wait(me, pause)  # that run_at, sleep_delay at most, or a ring
        finally:
            with run.gate(me) as open_:
                if open_:
                    self.flush_pending(run, me)
            self.executor.close_loop()

    def accept(self, row: JobRow) -> Parsed | None:
        """Is this row's name one we have a handler for? Its handler parsed (or why it could
        not be: a row of ours that fails to load), else None."""
        if self.recorder.outcomes.preparers and self.recorder.outcomes.refuses(row.id):
            return None  # an outcome participant leaves this row alone (recurring.py)
        result = _parse(row.handler, self.config)
        name = (result.name if isinstance(result, ParsedHandler)
                else ruby_yaml.fallback_dispatch_name(row.handler))
        if name is None or self.registry.spec(name) is None:
            return None
        return result

    def run_next(self, run: Run, me: str, limit: int = 1) -> RunResult:
        """Reserve and run the next job (reserve_batch > 1: up to `limit` rows, locked in one
        statement, their successes deleted together; a crash loses the deletes in hand and
        those jobs run again); (succeeded, failed), or why nothing ran."""
        batched = self.config.reserve_batch > 1
        with run.gate(me) as open_:
            if not open_:
                return Idle.NOTHING
            polled = time.perf_counter()
            try:
                reserved = self._reserve_many(me, limit) if batched else self._reserve_one(run, me)
            except SQLAlchemyError as exc:
                return self._reserve_failed(run, me, exc)
            self.refusals.clear()
            self.observer.polled(Poll.FOUND if reserved else Poll.NOTHING,
                                 time.perf_counter() - polled)
            if not reserved:
                return Idle.NOTHING
            self.wakeup.found(me)  # rung for a row and found one: there may be more
            if run.closed:  # closed while we reserved (a slot it stopped waiting for)
                self._unclaim([row.id for row in reserved], me)
                return Idle.NOTHING
            if batched:
                batch = run.batches[me] = Batch([r.id for r in reserved], [],
                                                self.clock.monotonic())
        if batched:
            return self._run_batch(run, me, reserved, batch)
        ok = self._run_row(run, reserved[0], me, defer=self.store.folds_deletes)
        return int(ok), int(not ok)

    def _reserve_one(self, run: Run, me: str) -> list[JobRow]:
        """The next row, deleting the slot's previous success with it (run.pending)."""
        finished = run.pending.pop(me, None)
        try:
            row = self.store.reserve(me, self.clock.now(), self.accept, finished)
        except BaseException:
            if finished:
                run.pending[me] = finished  # its delete was rolled back with the reserve
            raise
        return [] if row is None else [row]

    def _reserve_many(self, me: str, limit: int) -> list[JobRow]:
        return self.store.reserve_many(me, self.clock.now(), self.accept, limit)

    def _reserve_failed(self, run: Run, me: str, exc: SQLAlchemyError) -> Idle:
        log.error("db.unavailable", op="reserve", error=short_error(exc),
                  hint="retrying after sleep_delay")
        self.observer.polled(Poll.ERROR, 0.0, exc)
        pending = run.pending.get(me)
        if pending is not None and is_refusal(exc):
            # The success's DELETE may be what is refused: send it alone to find out.
            self.flush_pending(run, me)
        reason = self.refusals.note(exc)
        if reason is not None:
            self.fatal_stop(reason)
        return Idle.UNAVAILABLE

    def flush_pending(self, run: Run, me: str) -> None:
        """Delete a success still waiting for the next reserve (the slot is stopping). The
        caller holds the slot's gate, or closed the run."""
        pending = run.pending.pop(me, None)
        if pending is not None:
            self.recorder.record(run, pending.job, Succeeded(), me, pending.duration_ms,
                                 logged=pending.deleted is not None)

    def _run_batch(self, run: Run, me: str, reserved: list[JobRow],
                   batch: Batch) -> tuple[int, int]:
        """Run a batch's rows one after another, then delete its successes together."""
        succeeded = failed = 0
        for row in reserved:
            if run.stopping.is_set() or self._batch_at_risk(batch):
                with run.gate(me) as open_, run.lock:
                    rest, batch.waiting = list(batch.waiting), []
                if open_:
                    self._unclaim(rest, me)
                break
            with run.lock:
                lost = row.id not in batch.waiting  # the heartbeat found it taken over
                if not lost:
                    batch.waiting.remove(row.id)
            if lost:
                continue
            if self._run_row(run, row, me, batch):
                succeeded += 1
            else:
                failed += 1
        with run.gate(me) as open_:
            if open_:
                run.batches.pop(me, None)
                self.recorder.flush_deletes(run, batch.done, me)
        return succeeded, failed

    def _batch_at_risk(self, batch: Batch) -> bool:
        if not self.heartbeat.at_risk(batch.renewed):
            return False
        log.error("job.lease_at_risk", jobs=batch.waiting,
                  hint="the locks of the rows waiting in this batch could not be renewed; "
                       "another worker may take them: handed back instead of run")
        return True

    def _unclaim(self, ids: list[int], me: str) -> None:
        try:
            self.store.unclaim_many(ids, me)
        except SQLAlchemyError as exc:
            log.error("db.unavailable", op="unclaim", error=short_error(exc),
                      hint="the rows stay locked until the lock horizon")

    def _run_row(self, run: Run, row: JobRow, me: str,
                 batch: Batch | None = None, *, defer: bool = False) -> bool:
        """Run one reserved row and record its outcome (a batch's success into `batch.done`,
        a success whose DELETE rides with the next reserve into run.pending)."""
        result = row.parsed
        assert result is not None  # (a reserve returns only rows accept parsed)
        if isinstance(result, HandlerParseError):
            with run.gate(me) as open_:
                return open_ and self._fail_unparseable(run, row, result, me)
        spec = self.registry.spec(result.name)
        assert spec is not None
        job = self._job(row, result, spec, me)
        if self.recorder.outcomes.preparers:  # outcome participants look first (outcomes.py)
            prepared = self._prepare(run, job, me)
            if prepared is None:
                return False
            job = prepared
        now = self.clock.monotonic()
        flight = Flight(job, now, self.executor.run_time_for(spec),
                        batch.renewed if batch is not None else now)
        if not run.begin(me, flight):
            return False  # the run closed first: the row is released with the others
        job.log.debug("job.started", display_name=job.display_name)
        self.observer.started(job)
        started = time.perf_counter()
        if self.recorder.outcomes.attenders:  # run records (runs/tracking.py)
            outcome = self.recorder.outcomes.run(job, partial(self.executor.execute, job, spec))
        else:
            outcome = self.executor.execute(job, spec)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        self.observer.ran(job, duration_ms / 1000)
        return self._finish(run, job, outcome, me, duration_ms, batch, defer=defer)

    def _prepare(self, run: Run, job: Job, me: str) -> Job | None:
        """The job as the outcome participants prepared it; None: handed back unrun."""
        with run.gate(me) as open_:
            prepared = self.recorder.outcomes.prepare(job) if open_ else None
            if prepared is None and open_:
                self._unclaim([job.id], me)
            return prepared

    def _finish(self, run: Run, job: Job, outcome: Outcome, me: str, duration_ms: float,
                batch: Batch | None, *, defer: bool) -> bool:
        """Record the outcome of a job that ran (a batch's success into `batch.done`, a
        success whose DELETE rides with the next reserve into run.pending); did it succeed?"""
        with run.gate(me) as open_:
            if not run.end(me, job) or not open_:
                job.log.warning("job.finished_after_interrupt", duration_ms=duration_ms,
                                outcome=type(outcome).__name__,
                                hint="the row was already unlocked with attempts unchanged")
                return False
            if batch is not None and isinstance(outcome, Succeeded) and not self.recorder.claims(job):
                batch.done.append((job, duration_ms))
                return True
            if defer and isinstance(outcome, Succeeded):
                # Deleted by the next reserve, in its transaction (docs/protocol.md "Row protocol"),
                # with a participant's statements when they can ride along (run records).
                claimed = self.recorder.claims(job)
                extra = self.recorder.rides(job, outcome) if claimed else None
                if not claimed or extra is not None:
                    run.pending[me] = Deferred(job, duration_ms, self.recorder.settle, extra)
                    return True
            self.recorder.record(run, job, outcome, me, duration_ms)
        return isinstance(outcome, Succeeded)

    def _job(self, row: JobRow, parsed: ParsedHandler, spec: JobSpec | None, me: str) -> Job:
        max_attempts = self.config.max_attempts
        if spec is not None and spec.max_attempts is not None:
            max_attempts = spec.max_attempts
        return Job(
            id=row.id,
            name=parsed.name,
            display_name=parsed.display_name,
            payload=parsed.payload,
            attempts=row.attempts,
            max_attempts=max_attempts,
            queue=row.queue,
            priority=row.priority,
            run_at=row.run_at,
            locked_by=me,
            handler=row.handler,
            log=log.bind(job_id=row.id, name=parsed.name, queue=row.queue, attempt=row.attempts + 1),
        )

    def _fail_unparseable(self, run: Run, row: JobRow, error: HandlerParseError, me: str) -> bool:
        """Ruby's DeserializationError: failed for good at once, attempts unchanged."""
        name = ruby_yaml.fallback_dispatch_name(row.handler) or "?"
        spec = self.registry.spec(name) or self.registry.hooks_only(name)  # "*" hooks still run
        display = ruby_yaml.fallback_name(row.handler) or name  # Ruby's Delayed::Job#name
        job = self._job(row, ParsedHandler(name, display, None), spec, me)
        handler = row.handler if len(row.handler) <= 500 else row.handler[:500] + "…"
        message = f"Job failed to load: {error}. Handler: {handler!r}"
        job.log.error("job.unparseable", error=str(error))
        outcome = self.executor.fail(
            job, spec, HandlerParseError(message), attempts=row.attempts,
            last_error=format_error(HandlerParseError(message), named=False),  # Ruby's text
        )
        self.recorder.record(run, job, outcome, me, 0.0)
        return False


class Refusals:
    """Ruby raises FatalBackendError after 10 failed reserves in a row. We ride out outages
    (connection lost, restart, failover) for as long as they last; only a database that
    refuses us (authentication, privileges, a missing table) for REFUSED_FOR seconds and at
    least REFUSED_TIMES reserves in a row stops the worker."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._since: float | None = None
        self._count = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        if self._since is not None:
            with self._lock:
                self._since, self._count = None, 0

    def note(self, exc: SQLAlchemyError) -> str | None:
        """Count a failed reserve; the reason to stop, once it is time to."""
        if not is_refusal(exc):
            return None  # an outage, not a refusal: neither counts nor clears
        with self._lock:
            now = self.clock.monotonic()
            self._since = now if self._since is None else self._since
            self._count += 1
            lasted = now - self._since
            if self._count < REFUSED_TIMES or lasted < REFUSED_FOR:
                return None
        return (f"the database has refused every reserve for {lasted:.0f}s "
                f"({self._count} in a row): {short_error(exc)}")


def _parse(handler: str, config: Config) -> ParsedHandler | HandlerParseError:
    try:
        return ruby_yaml.load(handler, max_bytes=config.max_handler_bytes,
                              max_values=config.max_handler_values)
    except HandlerParseError as exc:
        return exc
