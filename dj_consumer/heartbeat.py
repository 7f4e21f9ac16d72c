"""Lease renewal (docs/operations.md "Lease renewal"): refresh locked_at of the jobs in hand, fenced by
locked_by; give up on a job that outlived max_run_time; warn a job whose lease could not be
renewed for most of its horizon before a peer may take it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.db import short_error
from dj_consumer.deadlines import Watchdog
from dj_consumer.run import Flight, Run
from dj_consumer.store import Store

log = structlog.get_logger(__name__)

#: A job whose lease was last renewed this long ago (a fraction of the horizon after which a
#: peer may take it) is told to stop: j.timed_out is set and job.lease_at_risk is logged.
AT_RISK = 0.8


class Heartbeat:
    """One thread renews; the watchdog thread (which never sends a statement, so a renewal
    stuck on a dead connection cannot hold it up) watches the leases' age."""

    def __init__(self, store: Store, clock: Clock, config: Config, watchdog: Watchdog,
                 current: Callable[[], Run | None],
                 owner: Callable[[int], tuple[bool | None, str | None]]) -> None:
        self.store, self.clock, self.config, self.watchdog = store, clock, config, watchdog
        self.current, self.owner = current, owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Called with the jobs in flight after each renewal (run records: cancel requests).
        self.watchers: list[Callable[[list[Flight]], None]] = []

    @property
    def horizon(self) -> float:
        """After how long without renewal a peer may take a lock of ours."""
        return self.config.lock_timeout if self.config.uses_leases else self.config.max_run_time

    def at_risk(self, renewed: float) -> bool:
        return self.clock.monotonic() - renewed > AT_RISK * self.horizon

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dj-heartbeat", daemon=True)
        self._thread.start()
        self.watchdog.schedule(self._check_every, self._check)

    def stop(self, wait: float = 5.0) -> None:
        """No renewal after this returns (unless one is stuck for longer than `wait`)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait)

    @property
    def _check_every(self) -> float:
        return min(self.config.heartbeat, (1 - AT_RISK) * self.horizon / 2)

    def _loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat):
            try:
                self.once()
            except Exception:  # the heartbeat must outlive any single failure
                log.exception("worker.heartbeat_error", hint="renewal goes on")

    def once(self) -> None:
        run = self.current()
        if run is None:
            return
        with run.lock:
            flights = [(me, f) for me, f in run.in_flight.items()
                       if f.job.id not in run.interrupted]
            batches = [(me, b, list(b.waiting)) for me, b in run.batches.items() if b.waiting]
        for me, batch, waiting in batches:
            now = self.clock.monotonic()
            try:
                lost = [i for i in waiting if not self.store.renew(i, me, self.clock.now())]
            except SQLAlchemyError as exc:
                log.error("db.unavailable", op="renew", error=short_error(exc), worker=me)
                continue
            batch.renewed = now
            if lost:
                with run.lock:
                    batch.waiting = [i for i in batch.waiting if i not in lost]
                log.warning("job.lock_lost", during="heartbeat", jobs=lost,
                            hint="rows waiting in a batch were taken over; they are not run")
        for me, flight in flights:
            if self._past_run_time(flight):
                continue
            self._renew(run, me, flight)
        for watch in self.watchers:
            watch([f for _, f in flights])

    def _past_run_time(self, flight: Flight) -> bool:
        """A handler that ignores timed_out and never returns would hold its row forever:
        stop renewing one heartbeat after max_run_time, so the row comes back as Ruby's would."""
        if not flight.renewing:
            return True
        overdue = self.clock.monotonic() - flight.started - flight.run_time
        if overdue < self.config.heartbeat:
            return False
        flight.renewing = False
        flight.job.log.error(
            "job.renewal_stopped", max_run_time=flight.run_time, overdue_s=round(overdue, 1),
            hint="the handler ignored timed_out and is still running; its lock is no longer "
                 "renewed, so another worker runs the job again once the lock expires "
                 "(Python peers after lock_timeout, Ruby after max_run_time)")
        return True

    def _renew(self, run: Run, me: str, flight: Flight) -> None:
        job = flight.job
        now = self.clock.monotonic()
        try:
            renewed = self.store.renew(job.id, me, self.clock.now())
        except SQLAlchemyError as exc:
            job.log.error("db.unavailable", op="renew", error=short_error(exc))
            return
        if renewed:
            flight.renewed = now
            return
        with run.lock:
            still_running = run.in_flight.get(me) is flight
        if not still_running:
            return  # it finished (and its row went) while we renewed
        exists, owner = self.owner(job.id)
        job.log.warning("job.lock_lost", during="heartbeat", row_exists=exists,
                        owner=owner, hint="timed_out is set; the outcome will not be written")
        job.timed_out.stop(f"the lock was lost (the row is now locked by {owner!r})")

    def _check(self) -> None:
        """On the watchdog thread: tell jobs whose lease went unrenewed for too long to stop."""
        if self._stop.is_set():
            return
        self.watchdog.schedule(self._check_every, self._check)
        run = self.current()
        if run is None:
            return
        with run.lock:
            flights = [f for f in run.in_flight.values()
                       if f.renewing and not f.job.timed_out and f.job.id not in run.interrupted]
        for flight in flights:
            if self.at_risk(flight.renewed):
                age = self.clock.monotonic() - flight.renewed
                flight.job.log.error(
                    "job.lease_at_risk", since_renewal_s=round(age, 1), horizon_s=self.horizon,
                    hint="its lock could not be renewed (database unreachable or a stuck "
                         "connection); another worker may take the job soon: timed_out is set")
                flight.job.timed_out.stop(
                    f"the lock could not be renewed for {age:.0f}s; another worker may take the "
                    f"job after {self.horizon:g}s")
