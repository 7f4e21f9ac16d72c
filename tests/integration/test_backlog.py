"""Behind a Ruby backlog: the mark skips rows already known not to be ours (issue 6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.reserve import mark
from tests.conftest import DB
from tests.integration.test_protocol import obj


@pytest.fixture
def always_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mark, "MARK_MIN_SCAN", -1.0)


def _backlog(db: DB, n: int, **cols: object) -> None:
    an_hour_ago = SystemClock().now().replace(microsecond=0) - timedelta(hours=1)
    db.insert_many([obj("RubyOnlyJob", n=i) for i in range(n)], run_at=an_hour_ago, **cols)


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
    assert w.store.mark.key is not None  # the next scan resumes here instead of restarting
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
    monkeypatch.setattr(mark, "MARK_TTL", -1.0)  # the mark has expired: rescan from the start
    assert w.work_off(5) == (2, 0)
    assert ran == [1, 2, 3]


RUBY_RESERVE = {
    # delayed_job_active_record's optimized_sql, as Ruby workers send it while draining.
    "mariadb": ("UPDATE {t} SET locked_at = :now, locked_by = :me WHERE ((run_at <= :now AND "
                "(locked_at IS NULL OR locked_at < :stale)) OR locked_by = :me) AND failed_at IS NULL "
                "AND queue = 'ruby' ORDER BY priority ASC, run_at ASC LIMIT 1"),
    "postgresql": ("UPDATE {t} SET locked_at = :now, locked_by = :me WHERE id IN (SELECT id FROM {t} "
                   "WHERE ((run_at <= :now AND (locked_at IS NULL OR locked_at < :stale)) OR "
                   "locked_by = :me) AND failed_at IS NULL AND queue = 'ruby' "
                   "ORDER BY priority ASC, run_at ASC LIMIT 1 FOR UPDATE) RETURNING id"),
}


def test_our_scans_make_no_ruby_reserve_wait(server_db: DB, always_mark: None) -> None:
    """A Ruby fleet draining its backlog while we scan past it: its reserves never wait on us."""
    import threading
    import time
    from urllib.parse import quote

    db = server_db
    _backlog(db, 3000, queue="ruby")
    now = SystemClock().now().replace(microsecond=0)
    db.insert_many([obj("PyJob", n=i) for i in range(300)], run_at=now)
    reg = Registry()
    reg.run("PyJob")(lambda j: None)
    short = ("init_command=" + quote("SET SESSION innodb_lock_wait_timeout=1")
             if db.backend == "mariadb" else "options=" + quote("-c lock_timeout=1000"))
    ruby_engine = sa.create_engine(db.url + "?" + short, isolation_level="AUTOCOMMIT")
    waits: list[float] = []
    errors: list[str] = []
    done = threading.Event()

    def ruby_worker() -> None:
        sql = sa.text(RUBY_RESERVE[db.backend].format(t=db.table))
        with ruby_engine.connect() as conn:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    conn.execute(sql, {"now": SystemClock().now(), "me": "rb host:x pid:1",
                                       "stale": SystemClock().now() - timedelta(hours=4)})
                    conn.execute(sa.text(f"DELETE FROM {db.table} WHERE locked_by = 'rb host:x pid:1'"))
                except sa.exc.DBAPIError as exc:
                    errors.append(str(exc.orig).splitlines()[0])
                waits.append(time.perf_counter() - t0)

    thread = threading.Thread(target=ruby_worker)
    thread.start()
    try:
        assert make_worker(db.config(concurrency=2, exit_on_complete=True), reg).start() is None
    finally:
        done.set()
        thread.join(30)
        ruby_engine.dispose()
    assert errors == []  # no lock wait timeout, no deadlock on the Ruby side
    with db.engine.connect() as conn:
        left = conn.execute(sa.text(f"SELECT count(*) FROM {db.table} WHERE handler LIKE '%PyJob%'")).scalar()
    assert left == 0
    assert waits and max(waits) < 1.0
