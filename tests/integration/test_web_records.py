"""`dj-consumer web` beside the optional tables and columns: a job page shows its run record
(state, progress, result) and asks for it again only while it can change; the recurring page
lists the schedules; a table without them says so. A real server process, a real SQLite table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import dj_consumer
from dj_consumer.clock import SystemClock
from dj_consumer.runs.records import result_json
from dj_consumer.schema import add_recurring_columns
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, job, runs_tables
from tests.integration.test_protocol import obj
from tests.webserver import WebServer, runs_web_server, wait_for, web_server


@pytest.fixture
def rdb(sqlite_db: DB) -> Iterator[RunsDB]:
    with runs_tables(sqlite_db) as r:
        yield r


@pytest.fixture
def server(rdb: RunsDB, tmp_path: Path) -> Iterator[WebServer]:
    with runs_web_server(rdb, tmp_path) as s:
        yield s


def get(server: WebServer, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=30)


def polled(html: str) -> str | None:
    """The `every Ns` of the run record's polling, or None when it is not polled."""
    section = html[html.index('<section id="run"'):]
    found = re.match(r'<section id="run" hx-get="/jobs/\d+/run" hx-trigger="(every \d+s)"',
                     section)
    return found.group(1) if found else None


def test_a_job_page_shows_the_run_record_and_polls_it_only_while_it_can_change(
        rdb: RunsDB, server: WebServer) -> None:
    now = SystemClock().now().replace(microsecond=0)
    job_id = rdb.db.insert(obj("ReportJob", year=2026), locked_by="py host:h pid:1",
                           locked_at=now)
    waiting = get(server, f"/jobs/{job_id}").text
    assert 'id="run-none"' in waiting and "No run record yet" in waiting
    assert polled(waiting) == "every 3s"  # it may start any time

    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(job_id, {"run_key": "r-1"}), now)
        rdb.store.progress(conn, job_id, 3, 10, "upload <rows>", now=now)
    running = get(server, f"/jobs/{job_id}").text
    assert '<span class="tag running" id="run-state">running</span>' in running
    assert '<progress id="progress" value="3" max="10"></progress>' in running
    assert "3 / 10 (30%)" in running and "upload &lt;rows&gt;" in running
    assert "<code>r-1</code>" in running
    assert polled(running) == "every 1s"
    assert polled(get(server, f"/jobs/{job_id}/run").text) == "every 1s"

    with rdb.engine.begin() as conn:  # as the worker finishes it: final record, row deleted
        rdb.store.finish(conn, job_id, "succeeded", attempts=0, now=now,
                         result=result_json({"rows": 3, "url": "s3://r/<7>"}))
    rdb.db.update(job_id, locked_by=None)
    with rdb.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {rdb.db.table} WHERE id = {job_id}")
    fragment = get(server, f"/jobs/{job_id}/run").text
    assert polled(fragment) is None  # final: the page stops asking
    assert 'id="run-state">succeeded<' in fragment
    assert '&#34;url&#34;: &#34;s3://r/&lt;7&gt;&#34;' in fragment
    gone = get(server, f"/jobs/{job_id}")
    assert gone.status_code == 404
    assert 'id="missing"' in gone.text and 'id="run-state">succeeded<' in gone.text


def test_a_failed_run_shows_its_error_and_is_polled_again_once_retried(rdb: RunsDB, server: WebServer) -> None:
    now = SystemClock().now().replace(microsecond=0)
    job_id = rdb.db.insert(obj("ReportJob"), failed_at=now, attempts=1,
                           last_error="KeyError: 'x'\nTraceback (most recent call last):\n  ...")
    with rdb.engine.begin() as conn:
        rdb.store.start(conn, job(job_id), now)
        rdb.store.finish(conn, job_id, "failed", attempts=1, now=now,
                         error="KeyError: 'x'\nTraceback (most recent call last):\n  ...")
    page = get(server, f"/jobs/{job_id}").text
    assert 'id="run-state">failed<' in page
    assert '<dd class="bad" id="run-error">KeyError: &#39;x&#39;</dd>' in page
    assert polled(page) is None
    rdb.db.update(job_id, failed_at=None, attempts=0)  # retried: it will run, and record again
    assert polled(get(server, f"/jobs/{job_id}").text) == "every 3s"


def test_without_a_runs_table_the_page_says_how_to_make_one(sqlite_db: DB,
                                                            tmp_path: Path) -> None:
    job_id = sqlite_db.insert(obj("ReportJob"))
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path) as server:
        page = get(server, f"/jobs/{job_id}").text
    assert "No runs table (<code>delayed_job_runs</code>)" in page
    assert "dj-consumer schema --create --runs" in page
    assert polled(page) is None


def test_the_recurring_page_lists_schedules_with_next_and_last_runs(
        sqlite_db: DB, tmp_path: Path) -> None:
    add_recurring_columns(sqlite_db.engine, sqlite_db.table)
    cfg = sqlite_db.config()
    every = dj_consumer.schedule(cfg, "SyncInventory", every=timedelta(minutes=15),
                                 queue="python")
    cron = dj_consumer.schedule(cfg, "NightlyReport", {"to": "ops"}, cron="0 6 * * *")
    last = SystemClock().now().replace(microsecond=0) - timedelta(minutes=3)
    with sqlite_db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {sqlite_db.table} SET last_run_at = :t WHERE id = :id"),
                     {"t": last, "id": every.id})
    plain = sqlite_db.insert(obj("ReportJob"))
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path) as server:
        wait_for(lambda: 'id="schedules"' in get(server, "/fragments/recurring").text,
                 "the schedules on the recurring page")
        page = get(server, "/recurring").text
        rows = re.findall(r'<tr data-id="(\d+)">.*?<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*'
                          r'<td class="schedule">(.*?)</td>', page, re.S)
        assert rows == [(str(every.id), "SyncInventory", "python", "every 900 s"),
                        (str(cron.id), "NightlyReport", "nil", "cron <code>0 6 * * *</code>")]
        assert re.search(rf'{last:%Y-%m-%d %H:%M:%S} <span class="muted">[34] min ago</span>', page)
        assert f"{cron.run_at:%Y-%m-%d %H:%M:%S}" in page
        job_page = get(server, f"/jobs/{cron.id}").text
        assert 'id="schedule"' in job_page and "cron <code>0 6 * * *</code>" in job_page
        assert f"{cron.run_at:%Y-%m-%d %H:%M:%S} UTC" in job_page
        assert 'id="schedule"' not in get(server, f"/jobs/{plain}").text


def test_a_table_without_recurring_columns_says_what_to_add(sqlite_db: DB,
                                                           tmp_path: Path) -> None:
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path) as server:
        page = get(server, "/recurring").text
    assert 'id="recurring-none"' in page and "dj-consumer schema --recurring" in page


def test_the_status_pass_reads_the_schedules_only_while_the_page_is_open(sqlite_db: DB) -> None:
    """The list of schedules costs a second pass over the table: taken only while somebody
    looks at the recurring page (want_schedules within `idle` seconds)."""
    from dj_consumer.admin import Admin
    from dj_consumer.config import Config
    from dj_consumer.store import Store
    from dj_consumer.web.snapshot import Snapshots

    cfg = Config.from_mapping(sqlite_db.config())
    reads: list[int] = []
    store = Store(cfg)
    try:
        snaps = Snapshots(Admin(store), cfg, SystemClock().now, idle=60,
                          read_schedules=lambda: reads.append(1) or [])
        assert snaps.take().schedules is None and reads == []
        snaps.want_schedules()
        assert snaps.take().schedules == [] and reads == [1]
        snaps.idle = 0.0  # the page was left: no more reads
        assert snaps.take().schedules is None and reads == [1]
    finally:
        store.close()


def test_a_runs_table_or_recurring_columns_added_later_show_up_without_a_restart(
        sqlite_db: DB) -> None:
    from dj_consumer.config import Config
    from dj_consumer.runs import schema as runs_schema
    from dj_consumer.store import Store
    from dj_consumer.web.records import RECHECK, Records

    runs, batches = f"{sqlite_db.table}_jr", f"{sqlite_db.table}_jb"
    cfg = Config.from_mapping(sqlite_db.config(runs_table=runs, batches_table=batches))
    clock = [0.0]
    store = Store(cfg)
    try:
        records = Records(store, cfg, monotonic=lambda: clock[0])
        assert (records.has_runs(), records.has_recurring()) == (False, False)
        runs_schema.create(sqlite_db.engine, runs, batches)
        add_recurring_columns(sqlite_db.engine, sqlite_db.table)
        clock[0] = RECHECK - 1  # looked up at most every RECHECK seconds
        assert (records.has_runs(), records.has_recurring()) == (False, False)
        clock[0] = RECHECK + 1
        assert (records.has_runs(), records.has_recurring()) == (True, True)
        assert records.run(1) is None and records.schedule(1) is None
    finally:
        store.close()
        for table in reversed(runs_schema.tables(runs, batches)):
            table.drop(sqlite_db.engine, checkfirst=True)
