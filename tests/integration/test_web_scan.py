"""The dashboard's reads on SQLite, MariaDB and PostgreSQL: the windowed listing
(admin_scan) walks every matching row exactly once, newest first, however small its windows
and its time budget; and the status pass's counts agree with it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from dj_consumer import admin_scan
from dj_consumer.admin import Admin, Filter, horizon
from dj_consumer.admin_scan import scan
from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.store import Store
from dj_consumer.web.snapshot import Snapshots
from tests.conftest import DB
from tests.integration.test_operator import fill
from tests.integration.test_protocol import obj

FILTERS = [
    Filter(), Filter(state="ready"), Filter(state="scheduled"), Filter(state="running"),
    Filter(state="failed"), Filter(queue="mail"), Filter(queue="nil"), Filter(name="MailJob"),
    Filter(name="User#send_welcome"), Filter(name="NewsletterJob", state="ready"),
    Filter(text="list_id: 4"), Filter(text="100%_!"), Filter(queue="nosuch"),
]


@pytest.fixture
def admin(db: DB) -> Iterator[Admin]:
    store = Store(Config(database_url=db.url, table_name=db.table))
    try:
        yield Admin(store)
    finally:
        store.close()


def walk(admin: Admin, f: Filter, now: datetime, budget: float = 1.0) -> list[int]:
    """Every id the pages give, following `older` to the end."""
    ids: list[int] = []
    before = None
    for _ in range(10_000):
        page = scan(admin, f, now, horizon(now, 14400), before=before, limit=3, budget=budget)
        ids += [r.id for r in page.rows]
        assert len(page.names) == len(page.rows)
        if page.older is None:
            return ids
        assert page.older < (before or 1 << 62)
        before = page.older
    raise AssertionError("the pages never ended")


def expected(admin: Admin, f: Filter, now: datetime) -> list[int]:
    """The matching ids from the unbounded listing (admin.ids, parsed names), newest first."""
    return sorted(admin.ids(f, now, horizon(now, 14400)), reverse=True)


def test_pages_walk_every_matching_row_once_in_tiny_windows(
        db: DB, admin: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    fill(db)
    db.insert(obj("NewsletterJob", note="100%_!"))  # LIKE's wildcards, taken literally
    for _ in range(30):  # ids far apart from the rest: empty windows between
        db.insert(obj("FillerJob"), queue="filler")
    monkeypatch.setattr(admin_scan, "FIRST_WINDOW", 2)
    monkeypatch.setattr(admin_scan, "CANDIDATES", 2)
    now = SystemClock().now()
    for f in FILTERS:
        want = expected(admin, f, now)
        assert walk(admin, f, now) == want, f
        # No time at all: one window per page, and the walk still reaches every row.
        assert walk(admin, f, now, budget=0.0) == want, f
    assert expected(admin, Filter(text="100%_!"), now) != []
    assert expected(admin, Filter(name="MailJob"), now) != []


def test_a_page_reads_a_bounded_window_when_nothing_matches(db: DB, admin: Admin) -> None:
    db.insert_many([obj("FillerJob")] * 50)
    page = scan(admin, Filter(queue="nosuch"), SystemClock().now(),
                SystemClock().now() - timedelta(hours=4), limit=10, budget=0.0)
    assert page.rows == []
    # One window of FIRST_WINDOW ids covers this small table, so the walk is done.
    assert page.older is None


def test_empty_table(admin: Admin) -> None:
    now = SystemClock().now()
    page = scan(admin, Filter(), now, now)
    assert (page.rows, page.older, page.searched_to) == ([], None, 0)


def test_status_pass_counts_what_the_pages_list(db: DB, admin: Admin) -> None:
    fill(db)
    now = SystemClock().now()
    snaps = Snapshots(admin, admin.store.config, lambda: now)
    snap = snaps.take()
    for f in FILTERS:
        if f.text is None:
            assert snap.count(f) == len(expected(admin, f, now)), f
