"""The worker: its slots (slots.py) in threads, signals, and shutdown: a stop finishes the jobs
in hand; an interrupt (second signal, shutdown_timeout) unlocks them; either way every success
is deleted before any lock is released, and a closed run's slots never write again."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer import ruby_yaml, startup
from dj_consumer.clock import Clock, SystemClock
from dj_consumer.config import Config
from dj_consumer.db import safe_url, short_error
from dj_consumer.deadlines import Watchdog
from dj_consumer.errors import ConfigError, FatalError
from dj_consumer.events import Observer
from dj_consumer.executor import Executor
from dj_consumer.heartbeat import Heartbeat
from dj_consumer.models import Interrupted
from dj_consumer.outcomes import Outcomes, Participant
from dj_consumer.recorder import Recorder
from dj_consumer.registry import Registry
from dj_consumer.run import GATE_WAIT, Run
from dj_consumer.slots import Idle, Slots
from dj_consumer.store import Store
from dj_consumer.wakeup import Prober

if TYPE_CHECKING:
    from dj_consumer.runs.tracking import RunRecords

log = structlog.get_logger(__name__)

__all__ = ["Worker", "make_worker"]


class Worker:
    """Runs the jobs whose names have a Python handler in `registry`."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        participants: Sequence[Participant] = (),
        observer: Observer | None = None,
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
        # Outcome participants (outcomes.py): statements in the same transaction as a job's
        # outcome, or written instead of it.
        self.outcomes = Outcomes(self.store, participants)
        self.recorder = Recorder(self.store, self.clock, config, self._fatal_stop, self.outcomes)
        self.heartbeat = Heartbeat(self.store, self.clock, config, self.watchdog,
                                   lambda: self._run, self.recorder.owner)
        self.slots = Slots(config, registry, self.clock, self.store, self.executor,
                           self.recorder, self.heartbeat, self._fatal_stop)
        self.observer = self.slots.observer = self.recorder.observer = observer or Observer()
        self._run: Run | None = None  # the start() or work_off() in progress
        self._stop_early = False  # stop() before start(): honoured by the next run
        self._fatal: str | None = None
        self._checked = False
        self._names: list[str] = []
        self._lock = threading.Lock()
        self.runs: RunRecords | None = None  # run records, when the table exists (at start)

    # -- public API ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """locked_by of every slot."""
        if self.config.concurrency == 1:
            return [self.config.worker_name()]
        return [self.config.worker_name(slot) for slot in range(self.config.concurrency)]

    def start(self) -> None:
        """Work until stop(), SIGTERM/SIGINT, or (exit_on_complete) nothing is left to run.

        When it returns, nothing of this run reserves, runs or writes again (a handler that
        ignored an interrupt may still be running, but its slot writes nothing for it).
        Raises FatalError when the worker cannot do its work (docs/operations.md "Running beside Ruby")."""
        self._setup()
        run = self._begin(self.names)
        restore = self._install_signal_handlers(run)
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
            threading.Thread(target=self.slots.loop, args=(run, name), name=f"dj-slot-{i}",
                             daemon=True)
            for i, name in enumerate(self.names)
        ]
        stop_waking = self._start_waking()
        for thread in threads:
            thread.start()
        try:
            self._watch(run, threads)
        finally:
            restore()
            stop_waking()
            self._finish(run)
        self._raise_if_fatal()

    def stop(self) -> None:
        """Finish the job in hand, release our locks, and return from start()."""
        self.observer.stopping()
        with self._lock:
            if self._run is None:
                self._stop_early = True
            else:
                self._run.stopping.set()
        self.slots.wakeup.ring(everyone=True)

    @property
    def stopping(self) -> bool:
        run = self._run
        return run.stopping.is_set() if run is not None else self._stop_early

    def work_off(self, num: int = 100) -> tuple[int, int]:
        """Run up to `num` ready jobs now, in this thread; (succeeded, failed), as Ruby's work_off."""
        self._setup()
        me = self.names[0]
        run = self._begin([me])
        succeeded = failed = 0
        try:
            while succeeded + failed < num and not run.stopping.is_set():
                limit = min(self.config.reserve_batch, num - succeeded - failed)
                result = self.slots.run_next(run, me, limit)
                if isinstance(result, Idle):
                    break
                succeeded, failed = succeeded + result[0], failed + result[1]
        finally:
            with run.gate(me) as open_:
                if open_:  # work_off returns with every outcome written
                    self.slots.flush_pending(run, me)
            self.executor.close_loop()
            run.close()
            self._run = None
        self._raise_if_fatal()
        return succeeded, failed

    def close(self) -> None:
        self.slots.wakeup.close()
        self.heartbeat.stop()
        if self.runs is not None:
            self.runs.close()
        self.watchdog.stop()
        self.executor.loops.close()
        self.store.close()

    # -- setup -----------------------------------------------------------------------------

    def _setup(self) -> None:
        """Once, before the first reserve (startup.py); again only for handlers registered
        since the last start/work_off."""
        if self._checked:
            if self.registry.names() != self._names:
                self._set_filters()
            return
        server = startup.check(self)  # handlers, the table and server, grants, participants
        self._checked = True
        startup.advise(self.store, self.config, server)
        self.heartbeat.start()

    def _set_filters(self) -> None:
        self._names = self.registry.names()
        self.store.set_name_filters(
            [p for name in self._names for p in ruby_yaml.like_patterns(name)], self._names)

    # -- one run: begin, watch, finish -----------------------------------------------------

    def _begin(self, names: list[str]) -> Run:
        with self._lock:
            run = self._run = Run(names)
            if self._stop_early:  # a stop() that came before start() is honoured
                run.stopping.set()
                self._stop_early = False
        return run

    def _watch(self, run: Run, threads: list[threading.Thread]) -> None:
        """Wait for the slots; after a stop, interrupt them once shutdown_timeout runs out
        or a second signal comes."""
        stop_seen: float | None = None
        for thread in threads:
            while thread.is_alive():
                thread.join(0.1)
                self.observer.tick()
                if not run.stopping.is_set():
                    continue
                self.slots.wakeup.ring(everyone=True)  # however the stop came, no idle slot sleeps on
                stop_seen = stop_seen if stop_seen is not None else time.monotonic()
                timeout = self.config.shutdown_timeout
                if (timeout is not None and time.monotonic() - stop_seen >= timeout
                        and not run.interrupt.is_set()):
                    run.interrupt_now(f"shutdown_timeout ({timeout:g}s) ran out")
                if run.interrupt.is_set():
                    return

    def _finish(self, run: Run) -> None:
        """Close the run, then: unlock interrupted jobs (attempts unchanged), delete every
        success still in hand, and only then release what this worker still holds."""
        busy = run.close()
        if busy:
            log.error("worker.slot_busy", slots=busy, wait_s=GATE_WAIT,
                      hint="these slots were still sending a statement; it is fenced by "
                           "locked_by, and they send nothing after it")
        if run.interrupt.is_set():
            self._interrupt_in_flight(run)
        released = 0
        for name in self.names:
            self.slots.flush_pending(run, name)
            batch = run.batches.pop(name, None)
            if batch is not None:
                self.recorder.flush_deletes(run, batch.done, name)
            try:
                released += self.store.release(name, keep=sorted(run.keep_locked))
            except Exception as exc:  # a driver's bug too: the other slots are released still
                log.error("worker.release_failed", worker=name, error=short_error(exc),
                          hint="rows this slot still holds come back after the lock horizon")
        with self._lock:
            if self._run is run:
                self._run = None
        log.info("worker.stopped", released=released)

    def _fatal_stop(self, reason: str) -> None:
        """The worker cannot do its work: stop, and have start()/work_off() raise."""
        with self._lock:
            if self._fatal is None:
                self._fatal = reason
                log.error("worker.fatal", error=reason,
                          hint="stopping; the process exits non-zero so a supervisor notices")
            if self._run is not None:
                self._run.stopping.set()
        self.slots.wakeup.ring(everyone=True)

    def _start_waking(self) -> Callable[[], None]:
        """What wakes idle slots before sleep_delay (docs/operations.md "Pick-up latency"): a PostgreSQL
        listener where the notify trigger is installed, and the prober (paused while
        notifications arrive); returns their stop."""
        from dj_consumer import notify

        cfg = self.config
        if cfg.exit_on_complete or cfg.sleep_delay <= 0:
            return lambda: None
        prober = (Prober(self.slots.wakeup, cfg.idle_poll)
                  if 0 < cfg.idle_poll < cfg.sleep_delay else None)
        live = prober.paused if prober is not None else threading.Event()
        try:
            listens = notify.installed(self.store)
        except SQLAlchemyError as exc:
            log.warning("wakeup.notify_unknown", error=short_error(exc))
            listens = False
        parts = ([notify.Listener(self.store, self.slots.wakeup, live)] if listens else []) + (
            [prober] if prober is not None else [])
        for part in parts:
            part.start()
        log.info("worker.wakeup", notify=listens, idle_poll=cfg.idle_poll if prober else 0)

        def stop() -> None:
            for part in parts:
                part.stop()
        return stop

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise FatalError(self._fatal)

    # -- signals and interrupts ------------------------------------------------------------

    def _install_signal_handlers(self, run: Run) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def handle(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if run.stopping.is_set():
                log.warning("worker.interrupting", signal=name,
                            hint="unlocking the jobs in hand with attempts unchanged")
                run.interrupt_now(f"second {name}")
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

    def _interrupt_in_flight(self, run: Run) -> None:
        """Interruptions cost no attempt: unlock, attempts and run_at unchanged, say why."""
        for me, job in run.take_in_flight():
            message = (f"Interrupted: worker {me} stopped ({run.reason}) while this job ran; "
                       "attempts unchanged, it will run again")
            job.timed_out.stop(message)
            try:
                written = self.recorder.write(job, Interrupted(message), me)
            except Exception as exc:  # a driver's bug too: the other jobs are unlocked still
                job.log.error("job.interrupt_unwritten", error=short_error(exc),
                              hint="the row stays locked; it runs again after the lock horizon")
                continue
            job.log.warning("job.interrupted", reason=run.reason, unlocked=written)


def make_worker(
    config: Mapping[str, Any] | Config,
    registry: Registry | None = None,
    *,
    clock: Clock | None = None,
    participants: Sequence[Participant] = (),
) -> Worker:
    """Build a worker from a config mapping (SPEC §2) and a registry (default: `dj_consumer.job`)."""
    from dj_consumer import job as default_registry

    if not isinstance(config, Mapping | Config):
        raise ConfigError(f"make_worker takes a config mapping, got {type(config).__name__}")
    return Worker(Config.from_mapping(config),
                  registry if registry is not None else default_registry, clock=clock,
                  participants=participants)
