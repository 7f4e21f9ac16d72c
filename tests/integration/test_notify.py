"""PostgreSQL LISTEN/NOTIFY (issue 18): the opt-in trigger wakes an idle worker at once; a lost
LISTEN connection falls back to polling and comes back; the CLI installs, prints and checks it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from dj_consumer import make_worker, notify
from dj_consumer.store import Store
from tests.conftest import DB, make_db
from tests.integration.test_cli_tools import cli
from tests.integration.test_wakeup import Stamps, running, stamp_handler


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[DB]:
    yield from make_db("postgresql", tmp_path)


def install(db: DB) -> None:
    store = Store(make_worker(db.config(), Stamps().registry).config)
    try:
        notify.install(store)
        assert notify.installed(store)
    finally:
        store.close()


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def listeners(db: DB) -> list[int]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dj_consumer listen' "
            "AND query ILIKE :listen"), {"listen": f'%{notify.Names(db.table).channel}%'}).scalars())


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_notification_wakes_a_sleeping_worker_well_before_sleep_delay(pg: DB) -> None:
    """idle_poll = 0: no prober; only the notification can wake it before 5 s."""
    install(pg)
    stamps = Stamps()
    with running(pg, stamps, idle_poll=0) as worker:
        assert wait_for(lambda: worker.slots.wakeup.idle and listeners(pg), 5)
        time.sleep(0.3)
        committed = time.time()
        pg.insert(stamp_handler(1))
        assert stamps.ran.wait(5)
    assert stamps.started[1] - committed < 0.5


def test_updates_that_make_a_row_ready_sooner_notify(pg: DB) -> None:
    install(pg)
    stamps = Stamps()
    later = now() + timedelta(hours=1)
    future = pg.insert(stamp_handler(1), run_at=later)
    held = pg.insert(stamp_handler(2), locked_at=now(), locked_by="delayed_job host:x pid:1")
    failed = pg.insert(stamp_handler(3), failed_at=now())
    with running(pg, stamps, idle_poll=0) as worker:
        assert wait_for(lambda: listeners(pg), 5)
        time.sleep(0.3)
        for job_id, change, seq in ((future, {"run_at": now()}, 1),
                                    (held, {"locked_at": None, "locked_by": None}, 2),
                                    (failed, {"failed_at": None}, 3)):
            stamps.ran.clear()
            assert wait_for(lambda: worker.slots.wakeup.idle, 2)
            time.sleep(0.2)
            changed = time.time()
            pg.update(job_id, **change)
            assert stamps.ran.wait(5)
            assert stamps.started[seq] - changed < 0.5, change


def test_a_killed_listen_connection_falls_back_to_polling_and_recovers(pg: DB) -> None:
    install(pg)
    stamps = Stamps()
    with running(pg, stamps, idle_poll=0, sleep_delay=2.0) as worker:
        assert wait_for(lambda: listeners(pg), 5)
        [pid] = listeners(pg)
        with pg.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        pg.insert(stamp_handler(1))  # lost by the listener: the next poll runs it
        assert stamps.ran.wait(4)
        assert wait_for(lambda: listeners(pg) and listeners(pg) != [pid], 10)
        stamps.ran.clear()
        assert wait_for(lambda: worker.slots.wakeup.idle, 2)
        time.sleep(0.3)
        committed = time.time()
        pg.insert(stamp_handler(2))  # the listener is back: at once again
        assert stamps.ran.wait(5)
    assert stamps.started[2] - committed < 0.5


def test_without_the_trigger_the_prober_wakes_the_worker(pg: DB) -> None:
    stamps = Stamps()
    with running(pg, stamps):
        assert not listeners(pg)
        committed = time.time()
        pg.insert(stamp_handler(1))
        assert stamps.ran.wait(5)
    assert stamps.started[1] - committed < 1.0


def test_schema_notify_installs_prints_and_check_reports_it(pg: DB) -> None:
    args = ("--database-url", pg.url, "--table-name", pg.table)
    before = cli("check", *args)
    assert "no notify trigger (optional)" in before.stdout
    rails = cli("schema", "--notify", "--rails", "--table-name", pg.table)
    assert rails.returncode == 0, rails.stderr
    assert "CREATE TRIGGER" in rails.stdout and "def down" in rails.stdout
    done = cli("schema", "--notify", *args)
    assert done.returncode == 0, done.stderr
    assert "notify trigger installed" in done.stdout
    after = cli("check", *args)
    assert "ok    notify trigger installed" in after.stdout
    assert after.returncode == before.returncode  # optional: never a warning


def test_schema_notify_is_for_postgresql_only(sqlite_db: DB) -> None:
    result = cli("schema", "--notify", "--database-url", sqlite_db.url)
    assert result.returncode != 0
    assert "--notify is for PostgreSQL" in result.stderr
