"""Issue 12 item 1: after start() returns, nothing of that worker reserves, runs or writes
again; every success is deleted before any lock is released (single and reserve_batch)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.test_protocol import obj


def slot_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("dj-slot-")}


def settle(before: set[threading.Thread], timeout: float = 10.0) -> None:
    """Let the test's abandoned slot threads (those not in `before`) do whatever they would
    do: wait until they have ended (then they can do nothing more), plus a moment. A slot
    that went on reserving and running jobs never ends, and the assertions after this see
    what it did in `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and slot_threads() - before:
        time.sleep(0.02)
    time.sleep(0.2)


def stubborn_registry(block_n: int) -> tuple[Registry, list[int], threading.Event, threading.Event]:
    """Jobs J(n): job `block_n` ignores timed_out and blocks until `release` is set."""
    reg, ran = Registry(), []
    started, release = threading.Event(), threading.Event()

    @reg.run("J")
    def work(j: Job) -> None:
        ran.append(j.payload["n"])
        if j.payload["n"] == block_n:
            started.set()
            release.wait(60)

    return reg, ran, started, release


def start_and_interrupt(w: Any, started: threading.Event, how: str) -> None:
    """Run w.start() here (the main thread, so it takes signals) and interrupt it once the
    stubborn job runs: stop() then shutdown_timeout, or two SIGTERMs."""
    def stopper() -> None:
        assert started.wait(30), "the stubborn job never started"
        if how == "second SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            w.stop()

    thread = threading.Thread(target=stopper)
    thread.start()
    started_at = time.monotonic()
    w.start()
    thread.join(30)
    assert time.monotonic() - started_at < 30


@pytest.mark.parametrize("how", ["shutdown_timeout", "second SIGTERM"])
def test_an_interrupted_worker_reserves_and_runs_nothing_after_start_returns(
        db: DB, how: str) -> None:
    before = slot_threads()
    reg, ran, started, release = stubborn_registry(block_n=0)
    ids = [db.insert(obj("J", n=n), priority=n) for n in range(5)]
    timeout = 0.3 if how == "shutdown_timeout" else None
    w = make_worker(db.config(shutdown_timeout=timeout), reg)
    start_and_interrupt(w, started, how)
    assert ran == [0]
    release.set()  # the abandoned handler returns now; its slot must do nothing more
    settle(before)
    assert ran == [0], "the abandoned slot thread went on reserving and running jobs"
    rows = {r.id: r for r in db.rows()}
    assert sorted(rows) == ids
    assert all(r.locked_by is None and r.attempts == 0 for r in rows.values())
    assert rows[ids[0]].last_error.startswith("Interrupted: ")
    w.close()


def test_a_second_start_of_the_same_worker_is_not_disturbed_by_the_first(db: DB) -> None:
    before = slot_threads()
    reg, ran, started, release = stubborn_registry(block_n=0)
    for n in range(4):
        db.insert(obj("J", n=n), priority=n)
    w = make_worker(db.config(shutdown_timeout=0.3, exit_on_complete=True), reg)
    start_and_interrupt(w, started, "shutdown_timeout")
    release.set()
    w.start()  # the same worker, the same locked_by names, while the first run's thread lives
    settle(before)
    assert Counter(ran) == {0: 2, 1: 1, 2: 1, 3: 1}
    assert db.count() == 0
    w.close()


@pytest.mark.parametrize("how", ["shutdown_timeout", "second SIGTERM"])
def test_batch_successes_are_deleted_before_the_release(db: DB, how: str) -> None:
    """reserve_batch: jobs 0 and 1 succeed, 2 hangs, 3 waits in the batch, 4 is not
    reserved. The interrupt used to release 0 and 1 with the rest, so they ran again."""
    before = slot_threads()
    reg, ran, started, release = stubborn_registry(block_n=2)
    ids = [db.insert(obj("J", n=n), priority=n) for n in range(5)]
    timeout = 0.3 if how == "shutdown_timeout" else None
    w = make_worker(db.config(reserve_batch=4, shutdown_timeout=timeout), reg)
    start_and_interrupt(w, started, how)
    assert db.row(ids[0]) is None and db.row(ids[1]) is None, "a success was released, not deleted"
    interrupted = db.row(ids[2])
    assert (interrupted.locked_by, interrupted.attempts) == (None, 0)
    assert interrupted.last_error.startswith("Interrupted: ")
    for job_id in ids[3:]:
        row = db.row(job_id)
        assert (row.locked_by, row.attempts, row.last_error) == (None, 0, None)
    release.set()
    settle(before)
    assert ran == [0, 1, 2]
    assert db.row(ids[2]).last_error == interrupted.last_error  # nothing written after
    assert make_worker(db.config(), reg).work_off() == (3, 0)
    assert Counter(ran) == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1}
    w.close()


def test_concurrent_slots_interrupted_leave_no_lock_and_no_success_behind(db: DB) -> None:
    before = slot_threads()
    reg, ran, started, release = stubborn_registry(block_n=0)
    ids = [db.insert(obj("J", n=n), priority=n) for n in range(30)]
    w = make_worker(db.config(concurrency=3, shutdown_timeout=0.5), reg)
    start_and_interrupt(w, started, "shutdown_timeout")
    release.set()
    settle(before)
    counts = Counter(ran)
    assert max(counts.values()) == 1
    for job_id, row in ((i, db.row(i)) for i in ids):
        n = ids.index(job_id)
        if row is not None:
            assert row.locked_by is None and row.attempts == 0
            assert n == 0 or n not in counts, f"job {n} ran but its row is still there"
        else:
            assert counts[n] == 1
    w.close()


def test_an_idle_slot_sends_nothing_after_start_returns(db: DB, monkeypatch: Any) -> None:
    """A slot that found nothing asks when the next run_at is due (a query) before it
    sleeps. Found by the model test (mariadb seed 834): a slot past its stopping check as the
    run closed sent that query after start() returned. Here the slot is held between its
    check and the query until start() has returned (1 s at most)."""
    from sqlalchemy import event

    from dj_consumer.wakeup import Wakeup

    before = slot_threads()
    entered, returned = threading.Event(), threading.Event()
    real = Wakeup.delay

    def held(self: Wakeup) -> float:
        if not entered.is_set():
            entered.set()
            returned.wait(1.0)
        return real(self)

    monkeypatch.setattr(Wakeup, "delay", held)
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(db.config(sleep_delay=5, shutdown_timeout=0.2), reg)
    after: list[str] = []
    event.listen(w.store.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: after.append(sql) if returned.is_set() else None)
    thread = threading.Thread(target=w.start)
    thread.start()
    assert entered.wait(30), "the slot never went idle"
    w.stop()
    thread.join(30)
    assert not thread.is_alive()
    returned.set()
    settle(before)
    assert after == [], f"statements after start() returned: {after}"
    w.close()
