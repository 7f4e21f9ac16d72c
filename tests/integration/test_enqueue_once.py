"""Issue 12 item 4: an enqueue is written at most once, even when the connection is lost
after the INSERT committed (it used to be retried: two rows, the job ran twice)."""

from __future__ import annotations

import pymysql
import pytest

from dj_consumer import enqueue
from dj_consumer.config import Config
from dj_consumer.store import Store
from tests.conftest import DB
from tests.faults import LOSE_REPLY, Faults


def _store(db: DB) -> tuple[Store, Faults]:
    store = Store(Config.from_mapping(db.config()))
    return store, Faults(store.db.engine, store.db.tx_engine)


def test_a_reply_lost_after_the_commit_writes_the_job_once(server_db: DB) -> None:
    db = server_db
    store, faults = _store(db)
    rule = faults.add(r"INSERT INTO", LOSE_REPLY)
    try:
        job_id = enqueue(db.config(), "MailJob", {"to": "a@example.com"}, store=store)
    finally:
        store.close()
    assert rule.fired == 1, "the fault never fired"
    rows = db.rows()
    assert [r.id for r in rows] == [job_id]
    assert "to: a@example.com" in rows[0].handler


def test_a_connection_lost_before_the_commit_is_retried_and_written_once(server_db: DB) -> None:
    db = server_db
    store, faults = _store(db)
    if db.backend == "mariadb":
        lost: Exception = pymysql.err.OperationalError(2013, "Lost connection (injected)")
    else:
        import psycopg

        lost = psycopg.OperationalError("server closed the connection unexpectedly (injected)")
    rule = faults.add(r"INSERT INTO", lost)
    try:
        job_id = enqueue(db.config(), "MailJob", {}, store=store)
    finally:
        store.close()
    assert rule.fired == 1
    assert [r.id for r in db.rows()] == [job_id]


def test_an_unknown_outcome_is_an_error_never_a_second_row(mariadb_db: DB) -> None:
    """MariaDB cannot say whether a lost COMMIT committed once the row is gone (a worker may
    have run and deleted it meanwhile): the caller hears so; nothing is inserted again."""
    from dj_consumer.errors import EnqueueUnknown

    db = mariadb_db
    store, faults = _store(db)
    faults.add(r"INSERT INTO", LOSE_REPLY)
    # A fast worker: the row is deleted the moment it is committed, before we can look.
    faults.add(r"SELECT id FROM .* LOCK IN SHARE MODE",
               lambda: _delete_all(db))
    try:
        with pytest.raises(EnqueueUnknown, match="not inserted again"):
            enqueue(db.config(), "MailJob", {}, store=store)
    finally:
        store.close()
    assert db.count() == 0


def _delete_all(db: DB) -> None:
    with db.engine.begin() as conn:
        conn.execute(db.t.delete())


def test_sqlite_an_insert_whose_answer_is_lost_is_written_once(sqlite_db: DB) -> None:
    """SQLite autocommits each statement: an INSERT that ran before its answer was lost had
    committed, and the retry wrote a second row (found by the model test, seed sqlite:49)."""
    db = sqlite_db
    store, faults = _store(db)
    rule = faults.add(r"INSERT INTO", LOSE_REPLY)
    try:
        job_id = enqueue(db.config(), "MailJob", {"to": "a@example.com"}, store=store)
    finally:
        store.close()
    assert rule.fired == 1, "the fault never fired"
    assert [r.id for r in db.rows()] == [job_id]
