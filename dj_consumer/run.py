"""What one start() (or work_off) holds: jobs in flight, successes not yet deleted, and
whether it is over. Closing a run is final: its slot threads never reserve, run or write again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dj_consumer.models import Job

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import TextClause

#: How long closing a run waits for a slot thread to finish the statement it is sending (a
#: reserve, an outcome). A slot running a handler holds no statement and is never waited for.
GATE_WAIT = 10.0


@dataclass(eq=False)
class Flight:
    """A job whose handler runs now, and its lease (times on the worker's clock.monotonic)."""

    job: Job
    started: float
    run_time: float
    renewed: float
    renewing: bool = True


#: Statements (and their binds) that run right after a success's fenced DELETE, in its
#: transaction, each writing nothing unless the DELETE took the row (`@dj_deleted = 1`, set
#: by the MySQL script): an outcome participant's (run records, runs/tracking.py).
Extra = tuple[list["TextClause"], dict[str, Any]]


class Deferred:
    """The previous success of a slot, deleted with its next reserve (in the reserve's own
    transaction where the strategy allows: one commit per job, not two).

    The one value for it: the slot keeps it in Run.pending and hands it to Store.reserve,
    whose strategy says what the DELETE found (`settle`); the recorder's `on_settled`
    (job.succeeded or job.lock_lost) then runs exactly once. A slot that stops with one in
    hand writes it alone (Slots.flush_pending)."""

    __slots__ = ("deleted", "duration_ms", "extra", "job", "on_settled")

    def __init__(self, job: Job, duration_ms: float,
                 on_settled: Callable[[Deferred], None], extra: Extra | None = None) -> None:
        self.job, self.duration_ms, self.on_settled = job, duration_ms, on_settled
        self.deleted: bool | None = None  # not known until its reserve has run
        #: an outcome participant's statements that travel with the DELETE (run records),
        #: only where the strategy takes them (Reserver.folds_extras)
        self.extra = extra

    def settle(self, deleted: bool) -> None:
        """Whether the DELETE found the row still ours; the first answer stands (the MySQL
        script tells it while the server commits: a retry of a reserve whose COMMIT reply was
        lost would find the row already gone, by our own hand)."""
        if self.deleted is None:
            self.deleted = deleted
            self.on_settled(self)


@dataclass(eq=False)
class Batch:
    """reserve_batch rows of one slot: those not run yet, and successes not yet deleted."""

    waiting: list[int] = field(default_factory=list)
    done: list[tuple[Job, float]] = field(default_factory=list)
    renewed: float = 0.0


class Run:
    """One start() or work_off(). A slot thread sends statements only inside `gate(me)`, and
    only while the run is open; `close()` makes that final."""

    def __init__(self, names: list[str]) -> None:
        self.stopping = threading.Event()
        self.interrupt = threading.Event()
        self.reason = "interrupted"
        self.closed = False
        self.lock = threading.Lock()
        self._gates = {me: threading.Lock() for me in names}
        self.in_flight: dict[str, Flight] = {}
        self.interrupted: set[int] = set()
        self.pending: dict[str, Deferred] = {}  # a success per slot, deleted by its next reserve
        self.batches: dict[str, Batch] = {}
        # Successes whose DELETE could not be written: never unlocked by this worker (an
        # unlocked success runs again).
        self.keep_locked: set[int] = set()

    @contextmanager
    def gate(self, me: str) -> Iterator[bool]:
        """Hold `me`'s gate while sending statements; yields False once the run is closed."""
        with self._gates[me]:
            yield not self.closed

    def interrupt_now(self, reason: str) -> None:
        self.reason = reason
        self.stopping.set()
        self.interrupt.set()

    def begin(self, me: str, flight: Flight) -> bool:
        """Mark a job as running, unless the run closed meanwhile (then it must not run)."""
        with self.lock:
            if self.closed:
                return False
            self.in_flight[me] = flight
            return True

    def end(self, me: str, job: Job) -> bool:
        """The job's handler returned: may its outcome be written (was it not interrupted)?"""
        with self.lock:
            if self.in_flight.get(me) is not None and self.in_flight[me].job is job:
                del self.in_flight[me]
            return job.id not in self.interrupted and not self.closed

    def close(self, wait: float = GATE_WAIT) -> list[str]:
        """No slot of this run sends another statement. Waits (up to `wait` seconds in all)
        for statements in progress; returns the slots still sending one."""
        with self.lock:
            self.closed = True
            self.stopping.set()
        busy = []
        deadline = time.monotonic() + wait
        for me, gate in self._gates.items():
            if gate.acquire(timeout=max(0.0, deadline - time.monotonic())):
                gate.release()
            else:
                busy.append(me)
        return busy

    def take_in_flight(self) -> list[tuple[str, Job]]:
        """The jobs running now, marked interrupted: their slots will write nothing for them."""
        with self.lock:
            jobs = [(me, f.job) for me, f in self.in_flight.items()]
            self.interrupted.update(job.id for _, job in jobs)
        return jobs
