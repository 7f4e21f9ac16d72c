"""The worker: poll → reserve → parse → execute → record, in one or more slots; signals; shutdown."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from types import FrameType
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer import ruby_yaml
from dj_consumer.clock import Clock, SystemClock
from dj_consumer.config import Config
from dj_consumer.db import safe_url, short_error
from dj_consumer.errors import ConfigError, HandlerParseError
from dj_consumer.executor import Executor, Watchdog, format_error
from dj_consumer.models import (
    Job,
    JobRow,
    ParsedHandler,
    Succeeded,
)
from dj_consumer.recorder import Pending, Recorder
from dj_consumer.registry import JobSpec, Registry
from dj_consumer.store import Store

log = structlog.get_logger(__name__)

#: What _run_one reports: True succeeded, False failed attempt, None nothing was ready,
#: UNAVAILABLE the database could not be asked (never read as "nothing left to run").
UNAVAILABLE = "unavailable"
RunResult = bool | None | str


class Worker:
    """Runs the jobs whose names have a Python handler in `registry`."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock or SystemClock()
        # The name filters are set at start/work_off, so handlers registered after
        # make_worker (but before the worker runs) are served too.
        self.store = store or Store(config)
        self.watchdog = Watchdog(self.clock.monotonic)
        self.executor = Executor(
            clock=self.clock,
            watchdog=self.watchdog,
            max_run_time=config.max_run_time,
            destroy_failed_jobs=config.destroy_failed_jobs,
        )
        self._stopping = threading.Event()
        self.recorder = Recorder(self.store, self.clock, config, self._stopping)
        self._interrupt = threading.Event()
        self._interrupt_reason = "interrupted"
        self._interrupted: set[int] = set()
        self._holding: set[str] = set()  # slots holding a reserved batch
        self._pending: dict[str, Pending] = {}  # a success per slot, deleted next reserve
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        self._checked = False
        self._names: list[str] = []
        self._in_flight: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """locked_by of every slot."""
        if self.config.concurrency == 1:
            return [self.config.worker_name()]
        return [self.config.worker_name(slot) for slot in range(self.config.concurrency)]

    def start(self) -> None:
        """Work until stop(), SIGTERM/SIGINT, or (exit_on_complete) nothing is left to run."""
        self._setup()
        restore = self._install_signal_handlers()
        log.info(
            "worker.started",
            worker=self.names[0] if len(self.names) == 1 else self.names,
            jobs=self.registry.names(),
            queues=list(self.config.queues) if self.config.queues else "all",
            concurrency=self.config.concurrency,
            database=safe_url(self.config.url),
        )
        # Slots always run in threads; this thread only watches signals and the drain timeout,
        # so an interrupt never has to unwind a running job: it unlocks the row and leaves.
        threads = [
            threading.Thread(target=self._slot_loop, args=(name,), name=f"dj-slot-{i}", daemon=True)
            for i, name in enumerate(self.names)
        ]
        for thread in threads:
            thread.start()
        stop_seen: float | None = None
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)
                    if not self._stopping.is_set():
                        continue
                    stop_seen = stop_seen if stop_seen is not None else time.monotonic()
                    timeout = self.config.shutdown_timeout
                    if timeout is not None and time.monotonic() - stop_seen >= timeout:
                        self._interrupt.set()
                        self._interrupt_reason = f"shutdown_timeout ({timeout:g}s) ran out"
                    if self._interrupt.is_set():
                        self._interrupt_in_flight(self._interrupt_reason)
                        return
        finally:
            restore()
            self._shutdown()
            # A stop() that came before or during start() was honoured; the next start()
            # of this worker begins afresh.
            self._stopping.clear()
            self._interrupt.clear()

    def stop(self) -> None:
        """Finish the job in hand, release our locks, and return from start()."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def work_off(self, num: int = 100) -> tuple[int, int]:
        """Run up to `num` ready jobs now, in this thread; (succeeded, failed), as Ruby's work_off."""
        self._setup()
        succeeded = failed = 0
        me = self.names[0]
        batch = self.config.reserve_batch
        try:
            while batch > 1 and succeeded + failed < num and not self._stopping.is_set():
                counts = self._run_batch(me, min(batch, num - succeeded - failed))
                if counts is None or isinstance(counts, str):
                    return succeeded, failed
                succeeded, failed = succeeded + counts[0], failed + counts[1]
            for _ in range(num if batch == 1 else 0):
                if self._stopping.is_set():
                    break
                result = self._run_one(me)
                if result is None or result == UNAVAILABLE:
                    break
                if result:
                    succeeded += 1
                else:
                    failed += 1
        finally:
            self._flush_pending(me)  # work_off returns with every outcome written
            self.executor.close_loop()
        return succeeded, failed

    def close(self) -> None:
        self._heartbeat_stop.set()
        self.watchdog.stop()
        self.executor.loops.close()
        self.store.close()

    # -- the loop --------------------------------------------------------------------------

    def _setup(self) -> None:
        if self._checked:
            if self.registry.names() != self._names:
                self._set_filters()  # handlers registered since the last start/work_off
            return
        if not self.registry.names():
            raise ConfigError(
                "no job handlers are registered; decorate a function with @job.run('SomeJob') "
                "in a module and pass it with --import MODULE"
            )
        self._set_filters()
        for name in self.registry.orphan_hooks():
            log.warning("worker.hook_without_run", name=name,
                        hint="hooks registered for a name with no @job.run never fire")
        server = self.store.check()
        self._checked = True
        if server.dialect == "mysql" and not server.skip_locked:
            log.info("worker.no_skip_locked", server=server.version,
                     hint="reserving with Rails' default_sql strategy; MariaDB >= 10.6 or "
                          "MySQL >= 8.0.1 add SKIP LOCKED and fewer collisions between workers")
        self._warn_if_scanning()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="dj-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _warn_if_scanning(self) -> None:
        from dj_consumer import diagnose

        try:
            indexes = diagnose.read_indexes(self.store)
        except SQLAlchemyError:
            return
        if diagnose.will_scan(self.config, indexes):
            log.warning(
                "worker.will_scan",
                hint="reserves read past ready rows we cannot run; behind a large Ruby backlog "
                     "that is slow. Serve a queue (--queues python) with an index on "
                     "(queue, priority, run_at): `dj-consumer check` prints the migration",
            )

    def _set_filters(self) -> None:
        self._names = self.registry.names()
        self.store.set_name_filters(
            [p for name in self._names for p in ruby_yaml.like_patterns(name)], self._names)

    def _slot_loop(self, me: str) -> None:
        batch = self.config.reserve_batch
        try:
            while not self._stopping.is_set():
                try:
                    result = self._run_batch(me, batch) if batch > 1 else self._run_one(me)
                except Exception:  # a bug of ours must not silently end the slot
                    log.exception("worker.slot_error", worker=me, hint="the slot goes on")
                    result = UNAVAILABLE
                if result == UNAVAILABLE:
                    # Not "nothing left": exit_on_complete waits for the database to return.
                    self.clock.sleep(max(self.config.sleep_delay, 0.5), self._stopping)
                    continue
                if result is not None:
                    continue
                if self.config.exit_on_complete:
                    return
                self.clock.sleep(self.config.sleep_delay, self._stopping)
        finally:
            self._flush_pending(me)
            self.executor.close_loop()

    def _acceptor(self) -> tuple[Callable[[JobRow], bool], dict[int, ParsedHandler | HandlerParseError]]:
        """accept(row): is this row's name one we have a handler for? (Parsed once, kept.)"""
        parsed: dict[int, ParsedHandler | HandlerParseError] = {}

        def accept(row: JobRow) -> bool:
            result = _parse(row.handler)
            name = result.name if isinstance(result, ParsedHandler) else ruby_yaml.fallback_name(row.handler)
            if name is None or self.registry.spec(name) is None:
                return False
            parsed[row.id] = result
            return True

        return accept, parsed

    def _run_one(self, me: str) -> RunResult:
        accept, parsed = self._acceptor()
        pending = self._pending.pop(me, None)
        # The success's log line is written as soon as its DELETE is known (on MySQL while the
        # server still commits), not on the way to the next job.
        report = None if pending is None else partial(self.recorder.log_deleted, pending)
        try:
            row, deleted = self.store.reserve_after(
                me, self.clock.now(), accept, pending.job.id if pending else None, on_deleted=report)
        except SQLAlchemyError as exc:
            if pending:
                self._pending[me] = pending  # its delete was rolled back with the reserve
            log.error("db.unavailable", op="reserve", error=short_error(exc),
                      hint="retrying after sleep_delay")
            return UNAVAILABLE
        if pending:
            self.recorder.log_deleted(pending, deleted)
        if row is None:
            return None
        fold = self.store.folds_deletes
        return self._run_row(row, parsed[row.id], me, pending=fold)

    def _flush_pending(self, me: str) -> None:
        """Delete a success still waiting for the next reserve (the slot is stopping)."""
        pending = self._pending.pop(me, None)
        if pending is not None:
            self.recorder.record(pending.job, Succeeded(), me, pending.duration_ms,
                                 logged=pending.logged is True)

    def _run_batch(self, me: str, limit: int) -> tuple[int, int] | str | None:
        """reserve_batch: lock up to `limit` rows in one statement, run them, delete the
        successes together. A crash loses the deletes in hand: those jobs run again."""
        accept, parsed = self._acceptor()
        try:
            rows = self.store.reserve_many(me, self.clock.now(), accept, limit)
        except SQLAlchemyError as exc:
            log.error("db.unavailable", op="reserve", error=short_error(exc),
                      hint="retrying after sleep_delay")
            return UNAVAILABLE
        if not rows:
            return None
        done: list[tuple[Job, float]] = []
        succeeded = failed = 0
        with self._lock:
            self._holding.add(me)
        try:
            for i, row in enumerate(rows):
                if self._stopping.is_set():
                    self._unclaim([r.id for r in rows[i:]], me)
                    break
                if self._run_row(row, parsed[row.id], me, done):
                    succeeded += 1
                else:
                    failed += 1
        finally:
            self.recorder.flush_deletes(done, me)
            with self._lock:
                self._holding.discard(me)
        return succeeded, failed

    def _unclaim(self, ids: list[int], me: str) -> None:
        try:
            self.store.unclaim_many(ids, me)
        except SQLAlchemyError as exc:
            log.error("db.unavailable", op="unclaim", error=short_error(exc),
                      hint="the rows stay locked until the lock horizon")

    def _run_row(self, row: JobRow, result: ParsedHandler | HandlerParseError, me: str,
                 deferred: list[tuple[Job, float]] | None = None, *, pending: bool = False) -> bool:
        """Run one reserved row and record its outcome (a success into `deferred`, if given)."""
        if isinstance(result, HandlerParseError):
            return self._fail_unparseable(row, result, me)
        spec = self.registry.spec(result.name)
        assert spec is not None
        job = self._job(row, result, spec, me)
        job.log.debug("job.started", display_name=job.display_name)
        started = time.perf_counter()
        with self._lock:
            self._in_flight[me] = job
        try:
            outcome = self.executor.execute(job, spec)
        finally:
            with self._lock:
                self._in_flight.pop(me, None)
                interrupted = job.id in self._interrupted
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if interrupted:
            job.log.warning("job.finished_after_interrupt", duration_ms=duration_ms,
                            outcome=type(outcome).__name__,
                            hint="the row was already unlocked with attempts unchanged")
            return False
        if deferred is not None and isinstance(outcome, Succeeded):
            deferred.append((job, duration_ms))
            return True
        if pending and isinstance(outcome, Succeeded):
            # Deleted by the next reserve, in its transaction (README "Row protocol").
            self._pending[me] = Pending(job, duration_ms)
            return True
        self.recorder.record(job, outcome, me, duration_ms)
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

    def _fail_unparseable(self, row: JobRow, error: HandlerParseError, me: str) -> bool:
        """Ruby's DeserializationError: failed for good at once, attempts unchanged."""
        name = ruby_yaml.fallback_name(row.handler) or "?"
        spec = self.registry.spec(name)
        job = self._job(row, ParsedHandler(name, name, None), spec, me)
        handler = row.handler if len(row.handler) <= 500 else row.handler[:500] + "…"
        message = f"Job failed to load: {error}. Handler: {handler!r}"
        job.log.error("job.unparseable", error=str(error))
        outcome = self.executor.fail(
            job, spec, HandlerParseError(message), attempts=row.attempts,
            last_error=format_error(HandlerParseError(message)),
        )
        self.recorder.record(job, outcome, me, 0.0)
        return False

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def handle(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stopping.is_set():
                log.warning("worker.interrupting", signal=name,
                            hint="unlocking the jobs in hand with attempts unchanged")
                self._interrupt_reason = f"second {name}"
                self._interrupt.set()
                return
            log.info("worker.stopping", signal=name,
                     hint="finishing the job in hand; send again to interrupt it")
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _interrupt_in_flight(self, reason: str) -> None:
        """Interruptions cost no attempt: unlock, attempts and run_at unchanged, say why."""
        with self._lock:
            in_flight = list(self._in_flight.items())
            self._interrupted.update(job.id for _, job in in_flight)
        for me, job in in_flight:
            job.timed_out.set()
            message = (f"Interrupted: worker {me} stopped ({reason}) while this job ran; "
                       "attempts unchanged, it will run again")
            try:
                written = self.store.interrupt(job.id, me, last_error=message, now=self.clock.now())
            except SQLAlchemyError as exc:
                job.log.error("job.interrupt_unwritten", error=short_error(exc),
                              hint="the row stays locked; it runs again after the lock horizon")
                continue
            job.log.warning("job.interrupted", reason=reason, unlocked=written)

    def _heartbeat_loop(self) -> None:
        """Lease renewal: refresh locked_at of every job in hand, fenced by locked_by."""
        while not self._heartbeat_stop.wait(self.config.heartbeat):
            try:
                self._heartbeat_once()
            except Exception:  # the heartbeat must outlive any single failure
                log.exception("worker.heartbeat_error", hint="renewal goes on")

    def _heartbeat_once(self) -> None:
        with self._lock:
            in_flight = [(me, j) for me, j in self._in_flight.items()
                         if j.id not in self._interrupted]
            holding = list(self._holding)
        for me in holding:
            try:
                self.store.renew_all(me, self.clock.now())
            except SQLAlchemyError as exc:
                log.error("db.unavailable", op="renew", error=short_error(exc))
        for me, job in in_flight:
            try:
                renewed = self.store.renew(job.id, me, self.clock.now())
            except SQLAlchemyError as exc:
                job.log.error("db.unavailable", op="renew", error=short_error(exc))
                continue
            if not renewed:
                with self._lock:
                    still_running = self._in_flight.get(me) is job
                if not still_running:
                    continue  # it finished (and its row went) while we renewed
                exists, owner = self.recorder.owner(job.id)
                job.log.warning("job.lock_lost", during="heartbeat", row_exists=exists,
                                owner=owner, hint="timed_out is set; the outcome will not be written")
                job.timed_out.set()

    def _shutdown(self) -> None:
        released = 0
        for name in self.names:
            self._flush_pending(name)  # an interrupt may leave a success not yet deleted
            try:
                released += self.store.release(name)
            except SQLAlchemyError as exc:
                log.error("worker.release_failed", worker=name, error=short_error(exc))
        log.info("worker.stopped", released=released)


def make_worker(
    config: Mapping[str, Any] | Config,
    registry: Registry | None = None,
    *,
    clock: Clock | None = None,
) -> Worker:
    """Build a worker from a config mapping (SPEC §2) and a registry (default: `dj_consumer.job`)."""
    from dj_consumer import job as default_registry

    if not isinstance(config, Mapping | Config):
        raise ConfigError(f"make_worker takes a config mapping, got {type(config).__name__}")
    return Worker(Config.from_mapping(config),
                  registry if registry is not None else default_registry, clock=clock)


def _parse(handler: str) -> ParsedHandler | HandlerParseError:
    try:
        return ruby_yaml.load(handler)
    except HandlerParseError as exc:
        return exc
