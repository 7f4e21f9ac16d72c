"""Issue 12, suspected items: a database that refuses us for good. A success whose DELETE is
refused stays locked and stops the worker (it used to be unlocked and run again, or polled
forever); the start-up check names a missing privilege; a database that refuses every
reserve (privileges dropped, table gone) stops the worker, non-zero, after a bounded time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dj_consumer import Job, Registry, make_worker, slots
from dj_consumer.errors import ConfigError, FatalError
from tests.conftest import DB
from tests.integration.test_protocol import obj


@contextmanager
def restricted_user(db: DB, privileges: str) -> Iterator[tuple[str, str]]:
    """A real database user holding only `privileges` on the test table: (its URL, its name)."""
    name = f"djr_{uuid.uuid4().hex[:8]}"
    with db.engine.begin() as conn:
        if db.backend == "mariadb":
            conn.execute(sa.text(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'pw'"))
            conn.execute(sa.text(f"GRANT {privileges} ON {db.table} TO '{name}'@'%'"))
        else:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'"))
            conn.execute(sa.text(f"GRANT {privileges} ON {db.table} TO {name}"))
            conn.execute(sa.text(f"GRANT USAGE ON SEQUENCE {db.table}_id_seq TO {name}"))
    url = make_url(db.url).set(username=name, password="pw")
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with db.engine.begin() as conn:
            if db.backend == "mariadb":
                conn.execute(sa.text(f"DROP USER IF EXISTS '{name}'@'%'"))
            else:
                conn.execute(sa.text(f"REVOKE ALL ON {db.table} FROM {name}"))
                conn.execute(sa.text(f"REVOKE ALL ON SEQUENCE {db.table}_id_seq FROM {name}"))
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                    {"u": name})
                conn.execute(sa.text(f"DROP ROLE IF EXISTS {name}"))


def revoke(db: DB, user: str, privileges: str) -> None:
    grantee = f"'{user}'@'%'" if db.backend == "mariadb" else user
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"REVOKE {privileges} ON {db.table} FROM {grantee}"))


def run_until_stopped(w: Any, timeout: float = 30) -> BaseException | None:
    """w.start() in a thread; what it raised (None if it returned), or a failure if it ran on."""
    raised: list[BaseException] = []

    def work() -> None:
        try:
            w.start()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    alive = thread.is_alive()
    if alive:
        w.stop()
        thread.join(30)
    w.close()
    assert not alive, "the worker kept polling a database that refuses it"
    return raised[0] if raised else None


@pytest.mark.parametrize("missing", ["DELETE", "UPDATE"])
def test_start_up_names_the_missing_privilege(server_db: DB, missing: str) -> None:
    granted = ", ".join(p for p in ("SELECT", "UPDATE", "DELETE", "INSERT") if p != missing)
    reg = Registry()
    reg.run("J")(lambda j: None)
    with restricted_user(server_db, granted) as (url, _user):
        w = make_worker(dict(server_db.config(), database_url=url), reg)
        try:
            with pytest.raises(ConfigError) as info:
                w.work_off()
        finally:
            w.close()
    message = str(info.value)
    assert f"may not {missing}" in message and server_db.table in message
    assert "\n" not in message


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """cli.main() configures structlog and the root logger for its process; put them back."""
    import logging

    import structlog

    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "dj-consumer"]:
        root.removeHandler(handler)
    logging.captureWarnings(False)


@pytest.mark.parametrize("missing", ["DELETE", "INSERT"])
def test_check_names_the_privileges_the_worker_needs(server_db: DB, missing: str,
                                                     capsys: pytest.CaptureFixture[str],
                                                     cli_logging: None) -> None:
    """`dj-consumer check` says which grant a worker (or enqueue) lacks, before a worker is
    started with it: a missing DELETE is an error (exit 2), a missing INSERT a warning."""
    from dj_consumer.cli import main

    granted = ", ".join(p for p in ("SELECT", "UPDATE", "DELETE", "INSERT") if p != missing)
    with restricted_user(server_db, granted) as (url, _user):
        code = main(["check", "--database-url", url, "--table-name", server_db.table])
    out = capsys.readouterr().out
    if missing == "DELETE":
        assert code == 2, out
        assert (f"ERROR the database user may not DELETE on table '{server_db.table}'"
                in out), out
        assert f"GRANT SELECT, UPDATE, DELETE ON {server_db.table}" in out, out
    else:
        assert code == 1, out
        assert f"WARN  the database user may not INSERT on table '{server_db.table}'" in out, out
        assert "ERROR" not in out, out
    with restricted_user(server_db, "SELECT, UPDATE, DELETE, INSERT") as (url, _user):
        main(["check", "--database-url", url, "--table-name", server_db.table])
    assert "ok    the database user may SELECT, UPDATE, DELETE and INSERT" in capsys.readouterr().out


@pytest.mark.parametrize("batch", [1, 3])
def test_a_success_whose_delete_is_refused_stays_locked_and_stops_the_worker(
        server_db: DB, batch: int) -> None:
    db = server_db
    reg, runs = Registry(), []
    with restricted_user(db, "SELECT, UPDATE, DELETE, INSERT") as (url, user):

        @reg.run("J")
        def work(j: Job) -> None:
            runs.append(j.id)
            if len(runs) == 1:
                revoke(db, user, "DELETE")  # a DBA drops the grant while the job runs

        ids = [db.insert(obj("J", n=n), priority=n) for n in range(2)]
        w = make_worker(dict(db.config(reserve_batch=batch, sleep_delay=0.05),
                             database_url=url), reg)
        raised = run_until_stopped(w)
    assert isinstance(raised, FatalError), raised
    assert "refused to delete" in str(raised)
    assert runs[0] == ids[0] and len(runs) == len(set(runs)), "a success ran again"
    for job_id in ids:
        row = db.row(job_id)
        if job_id in runs:  # succeeded, not deleted: kept locked, never run again
            assert row is not None and row.locked_by is not None and row.attempts == 0
        else:
            assert row.locked_by is None  # handed back


@pytest.fixture
def refuse_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots, "REFUSED_FOR", 1.0)
    monkeypatch.setattr(slots, "REFUSED_TIMES", 3)


def test_a_table_that_is_gone_stops_the_worker(db: DB, refuse_fast: None) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(db.config(sleep_delay=0.05), reg)
    w.work_off()  # set up (start-up checks pass), nothing to run

    def drop_table_soon() -> None:
        time.sleep(0.5)  # the worker is polling by then
        with db.engine.begin() as conn:  # a bad migration drops the table under us
            conn.execute(sa.text(f"DROP TABLE {db.table}"))

    threading.Thread(target=drop_table_soon, daemon=True).start()
    raised = run_until_stopped(w)
    assert isinstance(raised, FatalError), raised
    assert "refused every reserve" in str(raised)


def test_privileges_dropped_for_good_stop_the_worker(server_db: DB, refuse_fast: None) -> None:
    db = server_db
    reg = Registry()
    with restricted_user(db, "SELECT, UPDATE, DELETE, INSERT") as (url, user):

        @reg.run("J")
        def work(j: Job) -> None:
            revoke(db, user, "SELECT, UPDATE, DELETE, INSERT")

        job_id = db.insert(obj("J"))
        raised = run_until_stopped(make_worker(dict(db.config(sleep_delay=0.05),
                                                    database_url=url), reg))
    assert isinstance(raised, FatalError), raised
    row = db.row(job_id)
    assert row is not None and row.locked_by is not None  # its success could not be deleted
