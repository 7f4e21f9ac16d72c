"""A success deleted with the slot's next reserve (run.Deferred) is settled exactly once: one
job.succeeded per job when its DELETE found the row, one job.lock_lost when it did not — on
every strategy `auto` picks (the MySQL script settles it while the server commits)."""

from __future__ import annotations

from typing import Any

import structlog

from dj_consumer import Job, Registry, make_worker
from tests.conftest import DB
from tests.integration.test_protocol import obj


def _events(logs: list[dict[str, Any]], name: str) -> list[int]:
    return [e["job_id"] for e in logs if e["event"] == name]


def test_each_success_is_logged_once(db: DB) -> None:
    reg = Registry()
    reg.run("PyJob")(lambda j: None)
    db.insert_many([obj("PyJob", n=i) for i in range(20)])
    w = make_worker(db.config(), reg)
    try:
        with structlog.testing.capture_logs() as logs:
            assert w.work_off(100) == (20, 0)
    finally:
        w.close()
    succeeded = _events(logs, "job.succeeded")
    assert len(succeeded) == 20 == len(set(succeeded))
    assert _events(logs, "job.lock_lost") == []
    assert db.count() == 0


def test_a_success_whose_row_went_is_logged_lost_once(db: DB) -> None:
    reg = Registry()

    @reg.run("GoneJob")
    def gone(j: Job) -> None:
        db.update(j.id, locked_by="someone else host:h pid:1")  # taken over meanwhile

    reg.run("PyJob")(lambda j: None)
    first = db.insert(obj("GoneJob"))
    db.insert_many([obj("PyJob", n=i) for i in range(3)])
    w = make_worker(db.config(), reg)
    try:
        with structlog.testing.capture_logs() as logs:
            w.work_off(100)
    finally:
        w.close()
    assert _events(logs, "job.lock_lost") == [first]
    assert first not in _events(logs, "job.succeeded")
    assert len(_events(logs, "job.succeeded")) == 3
    assert db.row(first) is not None  # left alone: another worker holds it
