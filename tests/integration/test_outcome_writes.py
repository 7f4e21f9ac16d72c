"""Issue 12 item 3: an outcome the driver cannot send (a lone surrogate, a NUL) or any
non-database exception while writing it never makes the job run again at once; every text
we write is sanitized."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.faults import Faults
from tests.integration.test_protocol import obj

FILE = b"caf\xe9.csv".decode("utf-8", "surrogateescape")  # a file name os.listdir gave us


def drain(db: DB, reg: Registry, **cfg: Any) -> Any:
    """start() with exit_on_complete, in a thread that must end (it used to spin forever)."""
    w = make_worker(db.config(exit_on_complete=True, **cfg), reg)
    thread = threading.Thread(target=w.start, daemon=True)
    thread.start()
    thread.join(30)
    stuck = thread.is_alive()
    if stuck:
        w.stop()
        thread.join(30)
    w.close()
    assert not stuck, "exit_on_complete never exited: the job kept coming back"
    return w


@pytest.mark.parametrize(("message", "stored"), [
    (f"cannot import {FILE}", "cannot import caf\\xe9.csv"),
    ("bad \x00 byte", "bad \\x00 byte"),
    ("lone \ud83d half", "lone \\ud83d half"),
])
def test_an_error_the_driver_cannot_send_is_written_sanitized(db: DB, message: str,
                                                              stored: str) -> None:
    reg, runs = Registry(), []

    @reg.run("Import")
    def work(j: Job) -> None:
        runs.append(j.id)
        raise ValueError(message)

    job_id = db.insert(obj("Import"))
    drain(db, reg)
    assert runs == [job_id]
    row = db.row(job_id)
    assert (row.attempts, row.locked_by, row.failed_at) == (1, None, None)
    assert row.last_error.startswith("ValueError: " + stored + "\nTraceback")


def test_a_non_database_exception_while_writing_is_a_refused_write(db: DB) -> None:
    reg, runs = Registry(), []

    @reg.run("J")
    def work(j: Job) -> None:
        runs.append(j.id)
        raise ValueError("the job's error")

    job_id = db.insert(obj("J"))
    w = make_worker(db.config(exit_on_complete=True), reg)
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    rule = faults.add(r"SET attempts = ", RuntimeError("a driver bug"))
    thread = threading.Thread(target=w.start, daemon=True)
    thread.start()
    thread.join(30)
    w.stop()
    thread.join(10)
    w.close()
    assert rule.fired == 1
    assert runs == [job_id], "the job ran again at once"
    row = db.row(job_id)
    assert (row.attempts, row.locked_by) == (1, None)
    assert row.last_error.startswith("ValueError: the job's error\nTraceback")


@pytest.mark.parametrize("batch", [1, 4])
def test_a_one_off_driver_error_on_a_success_delete_does_not_stop_the_worker(
        db: DB, batch: int) -> None:
    """A DELETE carries no text of ours: a non-database error on one is tried again before it
    counts as refused for good (which stops the worker). Found by the model test (seed
    sqlite:24): one injected error on a DELETE made start() raise FatalError."""
    reg, runs = Registry(), []
    reg.run("J")(lambda j: runs.append(j.id))
    ids = [db.insert(obj("J")) for _ in range(3)]
    w = make_worker(db.config(exit_on_complete=True, reserve_batch=batch), reg)
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    rule = faults.add(r"DELETE FROM \S+ WHERE id", RuntimeError("a driver bug"))
    failure: list[BaseException] = []

    def start() -> None:
        try:
            w.start()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(30)
    w.stop()
    thread.join(10)
    w.close()
    assert rule.fired == 1, "the fault never fired"
    assert not failure, failure
    assert sorted(runs) == ids
    assert db.count() == 0


def test_a_driver_error_at_the_shutdown_release_leaves_start_quiet(db: DB) -> None:
    """The model test's N1 (seed 21): a non-database error while releasing one slot's locks
    escaped start(), and the slots after it were never released."""
    from datetime import datetime

    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(db.config(exit_on_complete=True, concurrency=2), reg)
    # A failed row left locked by the second slot (as Ruby leaves the rows it fails).
    held = db.insert(obj("J"), locked_by=w.names[1], locked_at=datetime(2026, 1, 1),
                     failed_at=datetime(2026, 1, 1))
    faults = Faults(w.store.db.engine, w.store.db.tx_engine)
    rule = faults.add(r"SET locked_at = NULL, locked_by = NULL WHERE", RuntimeError("a driver bug"))
    try:
        w.start()
    finally:
        w.close()
    assert rule.fired == 1
    assert db.row(held).locked_by is None
