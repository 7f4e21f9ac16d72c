"""Behind a Ruby backlog: the mark skips rows already known not to be ours (issue 6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker, store
from dj_consumer.clock import SystemClock
from tests.conftest import DB
from tests.integration.test_protocol import obj


@pytest.fixture
def always_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MARK_MIN_SCAN", -1.0)


def _backlog(db: DB, n: int, **cols: object) -> None:
    now = SystemClock().now().replace(microsecond=0) - timedelta(hours=1)
    with db.engine.begin() as conn:
        conn.execute(sa.insert(db.t), [{"handler": obj("RubyOnlyJob", n=i), "run_at": now,
                                        "priority": 0, "attempts": 0, **cols} for i in range(n)])


def test_jobs_behind_a_backlog_all_run_in_order(db: DB, always_mark: None) -> None:
    reg = Registry()
    order: list[int] = []
    reg.run("PyJob")(lambda j: order.append(j.payload["n"]))
    _backlog(db, 200)
    now = SystemClock().now().replace(microsecond=0)
    for n in range(5):
        db.insert(obj("PyJob", n=n), run_at=now - timedelta(minutes=10 - n))
    w = make_worker(db.config(), reg)
    assert w.work_off(2) == (2, 0)
    assert w.store._mark is not None  # the next scan resumes here instead of restarting
    assert w.work_off(100) == (3, 0)
    assert order == [0, 1, 2, 3, 4]
    assert db.count() == 200


def test_a_row_ready_behind_the_mark_is_still_found(db: DB, always_mark: None) -> None:
    reg = Registry()
    ran: list[int] = []
    reg.run("PyJob")(lambda j: ran.append(j.payload["n"]))
    _backlog(db, 50)
    now = SystemClock().now().replace(microsecond=0)
    db.insert(obj("PyJob", n=1), run_at=now)
    w = make_worker(db.config(), reg)
    assert w.work_off(1) == (1, 0)
    # A higher-priority row arrives behind the mark while nothing else is past it:
    db.insert(obj("PyJob", n=2), priority=-10, run_at=now - timedelta(days=1))
    assert w.work_off(5) == (1, 0)
    assert ran == [1, 2]


def test_mark_expires(db: DB, always_mark: None, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry()
    ran: list[int] = []

    def work(j: Job) -> None:
        ran.append(j.payload["n"])

    reg.run("PyJob")(work)
    now = SystemClock().now().replace(microsecond=0)
    db.insert(obj("PyJob", n=1), run_at=now - timedelta(minutes=1))
    db.insert(obj("PyJob", n=3), run_at=now)
    w = make_worker(db.config(), reg)
    assert w.work_off(1) == (1, 0)
    db.insert(obj("PyJob", n=2), priority=-1)  # behind the mark, while n=3 is past it
    monkeypatch.setattr(store, "MARK_TTL", -1.0)  # the mark has expired: rescan from the start
    assert w.work_off(5) == (2, 0)
    assert ran == [1, 2, 3]
