"""Delayed::Job.enqueue, written at most once: a fault before the COMMIT was sent leaves
nothing behind and is retried; a connection lost while committing is settled by asking the
database, never by inserting again on a guess (EnqueueUnknown when it cannot say)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer.db import Connections, is_transient, short_error
from dj_consumer.errors import EnqueueUnknown
from dj_consumer.sql import Statements

log = structlog.get_logger("dj_consumer.store")


def insert_once(db: Connections, sql: Statements, dialect: str, params: dict[str, Any]) -> int:
    """INSERT the row (sql.insert's binds); its id."""
    while True:
        try:
            return db.retrying("insert", lambda: _insert(db, sql, dialect, params))
        except _CommitLost as lost:
            committed = _committed(db, sql, lost)
            if committed:
                return lost.job_id
            if committed is None:
                raise EnqueueUnknown(
                    f"the connection was lost while committing job {lost.job_id} "
                    f"({short_error(lost.error)}) and the database cannot say whether it "
                    "committed; it was not inserted again") from None
            log.warning("db.retrying", op="insert", error=short_error(lost.error),
                        hint="the lost COMMIT did not commit; inserting again")


def _insert(db: Connections, sql: Statements, dialect: str, params: dict[str, Any]) -> int:
    if dialect == "sqlite":
        # The SQLite connection autocommits each statement: open the transaction by hand,
        # so an INSERT whose answer is lost is rolled back (the connection is closed on any
        # error) and its retry is the only row.
        with db.connection() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            job_id = conn.execute(sql.insert, params).lastrowid
            conn.exec_driver_sql("COMMIT")
        return int(job_id)
    with db.connection(tx=True) as conn:
        trans = conn.begin()
        result = conn.execute(sql.insert, params)
        if dialect == "postgresql":
            job_id, marker = result.one()
        else:
            job_id, marker = result.lastrowid, None
        try:
            trans.commit()
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise  # a refusal is no lost reply
            raise _CommitLost(int(job_id), marker, exc) from exc
    return int(job_id)


def _committed(db: Connections, sql: Statements, lost: _CommitLost) -> bool | None:
    """Did the transaction whose COMMIT reply was lost commit? None: cannot tell."""
    for _ in range(20):
        try:
            if lost.marker is not None:
                status = db.retrying("insert_check", lambda: _status(db, sql, lost.marker))
                if status in ("committed", "aborted"):
                    return bool(status == "committed")
                if status is None:
                    return None
                time.sleep(0.5)  # in progress: the server has not seen the socket close
                continue
            with db.connection(tx=True) as conn, conn.begin():
                found = conn.execute(sql.insert_check, {"id": lost.job_id}).first()
            # MySQL: no row may also mean that it committed and a worker already ran it.
            return True if found is not None else None
        except SQLAlchemyError:
            return None
    return None


def _status(db: Connections, sql: Statements, marker: Any) -> Any:
    """PostgreSQL's txid_status of the transaction: committed, aborted, in progress or None."""
    with db.connection() as conn:
        return conn.execute(sql.insert_status, {"xid": marker}).scalar()


class _CommitLost(Exception):
    """The reply to an INSERT's COMMIT was lost: it may or may not have committed."""

    def __init__(self, job_id: int, marker: Any, error: SQLAlchemyError) -> None:
        super().__init__(f"COMMIT of job {job_id} lost")
        self.job_id, self.marker, self.error = job_id, marker, error
