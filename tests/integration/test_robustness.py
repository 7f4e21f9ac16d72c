"""Defects found in review, each pinned: late registration, early stop, refused writes,
SystemExit in a handler, look-alike names, exit_on_complete with slots, and friends."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, enqueue, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from tests.conftest import DB
from tests.integration.test_protocol import obj


def test_empty_registry_is_used_and_late_registrations_run(db: DB) -> None:
    reg = Registry()
    w = make_worker(db.config(), registry=reg)
    assert w.registry is reg  # an empty Registry is falsy; it must still be the one used
    reg.run("Late")(lambda j: None)
    job_id = db.insert(obj("Late"))
    assert w.work_off() == (1, 0)
    assert db.row(job_id) is None
    reg.run("Later")(lambda j: None)  # registered between two work_off calls
    later = db.insert(obj("Later"))
    assert w.work_off() == (1, 0)
    assert db.row(later) is None


def test_stop_before_start_returns_at_once(sqlite_db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    w = make_worker(sqlite_db.config(sleep_delay=30), reg)
    w.stop()
    thread = threading.Thread(target=w.start)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def test_look_alike_names_are_never_locked_and_never_starve_ours(db: DB) -> None:
    """FooBar rows pass Foo's LIKE prefilter; they must be skipped without being touched."""
    reg = Registry()
    reg.run("Foo")(lambda j: None)
    now = SystemClock().now().replace(microsecond=0)
    lookalikes = [db.insert(obj("FooBar", n=i), run_at=now - timedelta(minutes=10)) for i in range(12)]
    ours = db.insert(obj("Foo"))
    if db.backend == "postgresql":  # record any write to the look-alike rows
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {db.table}_audit (id int, locked_by text)"))
            conn.execute(sa.text(
                f"CREATE FUNCTION {db.table}_f() RETURNS trigger AS $$ BEGIN "
                f"INSERT INTO {db.table}_audit VALUES (NEW.id, NEW.locked_by); RETURN NEW; END $$ "
                "LANGUAGE plpgsql"))
            conn.execute(sa.text(
                f"CREATE TRIGGER {db.table}_t BEFORE UPDATE ON {db.table} FOR EACH ROW "
                f"WHEN (NEW.handler LIKE '%FooBar%') EXECUTE FUNCTION {db.table}_f()"))
    try:
        assert make_worker(db.config(), reg).work_off() == (1, 0)
        assert db.row(ours) is None
        for job_id in lookalikes:
            assert db.row(job_id).locked_by is None
        if db.backend == "postgresql":
            with db.engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT count(*) FROM {db.table}_audit")).scalar() == 0
    finally:
        if db.backend == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE {db.table}_audit"))
                conn.execute(sa.text(f"DROP TRIGGER {db.table}_t ON {db.table}"))
                conn.execute(sa.text(f"DROP FUNCTION {db.table}_f"))


def test_exit_on_complete_with_slots_drains_everything(db: DB) -> None:
    reg = Registry()
    reg.run("J")(lambda j: None)
    db.insert_many([obj("J" if i % 3 else "RubyJob", n=i) for i in range(150)])
    make_worker(db.config(concurrency=4, exit_on_complete=True, read_ahead=2), reg).start()
    assert db.count() == 50  # only the Ruby rows are left


def test_system_exit_in_a_handler_is_a_failed_attempt(db: DB) -> None:
    reg = Registry()
    ran: list[int] = []

    def quits(j: Job) -> None:
        sys.exit(3)

    reg.run("Quits")(quits)
    reg.run("Next")(lambda j: ran.append(j.id))
    q = db.insert(obj("Quits"), priority=-1)
    n = db.insert(obj("Next"))
    make_worker(db.config(exit_on_complete=True), reg).start()
    assert db.row(q).attempts == 1 and db.row(q).last_error.startswith("SystemExit: 3\n")
    assert ran == [n]


def test_a_refused_outcome_write_unlocks_instead_of_hanging(mariadb_db: DB) -> None:
    """An emoji in last_error, a utf8mb3 column on MariaDB (strict mode) refuses it."""
    db = mariadb_db
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {db.table} MODIFY last_error TEXT CHARACTER SET utf8mb3"))
    reg = Registry()

    def boom(j: Job) -> None:
        raise ValueError("bad input 😀")

    reg.run("J")(boom)
    job_id = db.insert(obj("J"))
    assert make_worker(db.config(), reg).work_off() == (0, 1)
    row = db.row(job_id)
    assert row.locked_by is None and row.attempts == 1
    assert row.last_error.startswith("ValueError: bad input \\U0001f600")


def test_heartbeat_is_kept_under_a_short_max_run_time(sqlite_db: DB) -> None:
    cfg = Config.from_mapping(sqlite_db.config(max_run_time=2))
    assert cfg.heartbeat <= 0.5
    assert Config.from_mapping(sqlite_db.config()).heartbeat == 60


def test_root_class_names_without_prefilter_still_work(db: DB) -> None:
    reg = Registry()
    reg.run("Hash")(lambda j: None)
    reg.run("J")(lambda j: None)
    job_id = db.insert(obj("J"))
    assert make_worker(db.config(), reg).work_off() == (1, 0)
    assert db.row(job_id) is None


def test_enqueue_uses_the_registered_queue(sqlite_db: DB) -> None:
    reg = Registry()
    reg.run("MailJob", queue="mail")(lambda j: None)
    job_id = enqueue(sqlite_db.config(), "MailJob", {}, registry=reg)
    assert sqlite_db.row(job_id).queue == "mail"


def test_bad_configs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="db_config port must be a number"):
        Config.from_mapping({"db_config": {"db_name": "x", "port": "abc"}})
    with pytest.raises(ConfigError, match="make_worker takes a config mapping"):
        make_worker(None)  # type: ignore[arg-type]


def test_watchdog_does_not_grow_behind_a_long_deadline() -> None:
    import time

    from dj_consumer.executor import Watchdog

    dog = Watchdog(time.monotonic)
    dog.schedule(3600, lambda: None)
    for _ in range(10_000):
        dog.cancel(dog.schedule(3600, lambda: None))
    assert len(dog._heap) < 200
    dog.stop()
