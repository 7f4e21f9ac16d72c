"""Issue 12 item 7: SQLite keeps times as text, in two forms for one instant.

Rails writes `2026-01-01 12:00:00` (no fraction when there is none), SQLAlchemy (us)
`2026-01-01 12:00:00.000000`; as strings the first sorts before the second. Every time
comparison — ready, Ruby's stale horizon, the lease horizon, the backlog mark — must give
Ruby's answer for rows written either way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Registry, make_worker
from dj_consumer.clock import FakeClock
from dj_consumer.reserve import mark
from tests.conftest import DB
from tests.integration.test_protocol import obj

T0 = datetime(2026, 1, 1, 12, 0, 0)
MAX_RUN_TIME = 3600.0
LOCK_TIMEOUT = 300.0


def rails_insert(db: DB, handler: str, **times: datetime | str) -> int:
    """A row as ActiveRecord's SQLite adapter writes it: times as text, no zero fraction."""
    cols: dict[str, Any] = {"run_at": T0 - timedelta(hours=1), "created_at": T0, **times}
    text = {k: v if isinstance(v, str) else v.strftime("%Y-%m-%d %H:%M:%S") for k, v in cols.items()}
    for k, v in cols.items():
        if isinstance(v, datetime) and v.microsecond:
            text[k] += f".{v.microsecond:06d}"
    names = ", ".join(["handler", "priority", "attempts", "updated_at", *text])
    binds = ", ".join([":handler", "0", "0", ":created_at", *(f":{k}" for k in text)])
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {db.table} ({names}) VALUES ({binds})"),
                     {"handler": handler, **text})
        return int(conn.execute(sa.text("SELECT last_insert_rowid()")).scalar_one())


def worker(db: DB, now: datetime, ran: list[Any]) -> Any:
    reg = Registry()
    reg.run("J")(lambda j: ran.append(j.payload["n"]))
    return make_worker(db.config(max_run_time=MAX_RUN_TIME, lock_timeout=LOCK_TIMEOUT,
                                 heartbeat_interval=10), reg, clock=FakeClock(now))


def test_rows_tied_with_the_backlog_mark_keep_their_order(
        sqlite_db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mark, "MARK_MIN_SCAN", -1.0)  # the mark from the first reserve on
    for n in (1, 2, 3):
        rails_insert(sqlite_db, obj("J", n=n), run_at=T0 - timedelta(minutes=5))
    rails_insert(sqlite_db, obj("J", n=4), run_at=T0 - timedelta(minutes=5) + timedelta(seconds=1))
    ran: list[int] = []
    w = worker(sqlite_db, T0, ran)
    for _ in range(4):
        assert w.work_off(1) == (1, 0)
    assert ran == [1, 2, 3, 4]
    w.close()


@pytest.mark.parametrize("written_by", ["rails", "us"])
@pytest.mark.parametrize(("locked_by", "horizon"), [
    ("rb host:x pid:1", MAX_RUN_TIME),       # Ruby's horizon, for every lock
    ("pytest host:x pid:1", LOCK_TIMEOUT),   # a lease of our worker_id family
])
def test_a_lock_exactly_at_the_horizon_is_live_and_one_microsecond_later_stale(
        sqlite_db: DB, locked_by: str, horizon: float, written_by: str) -> None:
    """Ruby: stale when `locked_at < now - horizon`, strictly."""
    db = sqlite_db
    if written_by == "rails":
        job_id = rails_insert(db, obj("J", n=1), locked_at=T0, locked_by=locked_by)
    else:
        job_id = db.insert(obj("J", n=1), run_at=T0 - timedelta(hours=1), locked_at=T0,
                           locked_by=locked_by)
    ran: list[int] = []
    at_horizon = T0 + timedelta(seconds=horizon)
    w = worker(db, at_horizon, ran)
    assert w.work_off() == (0, 0), "a lock exactly lock-horizon old was taken"
    w.clock.advance(0.000001)  # type: ignore[attr-defined]
    assert w.work_off() == (1, 0)
    assert ran == [1] and db.row(job_id) is None
    w.close()


@pytest.mark.parametrize("written_by", ["rails", "us"])
def test_a_row_due_exactly_now_is_ready(sqlite_db: DB, written_by: str) -> None:
    if written_by == "rails":
        rails_insert(sqlite_db, obj("J", n=1), run_at=T0)
    else:
        sqlite_db.insert(obj("J", n=1), run_at=T0)
    ran: list[int] = []
    w = worker(sqlite_db, T0 - timedelta(microseconds=1), ran)
    assert w.work_off() == (0, 0)
    w.clock.advance(0.000001)  # type: ignore[attr-defined]
    assert w.work_off() == (1, 0)
    w.close()


def test_the_scan_past_lookalikes_pages_through_rows_tied_on_run_at(sqlite_db: DB) -> None:
    """The scan's keyset resumes after the last row read, inside a run of equal run_at."""
    for n in range(12):
        rails_insert(sqlite_db, obj("JobLookalike", n=n), run_at=T0 - timedelta(minutes=5))
    for n in range(3):
        rails_insert(sqlite_db, obj("J", n=n), run_at=T0 - timedelta(minutes=5))
    reg = Registry()
    ran: list[int] = []
    reg.run("J")(lambda j: ran.append(j.payload["n"]))
    w = make_worker(sqlite_db.config(read_ahead=2), reg, clock=FakeClock(T0))
    assert w.work_off() == (3, 0)
    assert ran == [0, 1, 2]
    w.close()
