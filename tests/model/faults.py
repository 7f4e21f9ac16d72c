"""Faults injected under the worker, at the driver: no mock of the database.

`install(store, …)` hooks SQLAlchemy's `do_connect` on the store's engines (before their
first connection), so every DB-API connection the store ever gets is a `_Connection` around the
real driver connection. Its cursors' `execute` (which the hot path calls directly, see
dj_consumer/db.py Connections.run/run_script) and its `commit` count statements by kind and,
when the worker's plan says so, inject one fault:

- lost_reply: the statement runs (and commits), then the real connection is closed and the
  client sees the driver's disconnect error (pymysql 2013, psycopg OperationalError; SQLite
  cannot lose a reply, so it sees "database is locked" after its commit);
- before: the driver's disconnect error before the statement is sent (connection closed);
- non_db: a non-database exception from the driver layer (UnicodeEncodeError, as a driver
  raises for text it cannot encode) before the statement;
- kill: a real KILL CONNECTION / pg_terminate_backend from another session, then the
  statement (SQLite: the connection is closed under it);
- lock_wait: a real row lock held by another session and a 1 s lock wait, for statements
  aimed at one row (MariaDB, PostgreSQL); elsewhere the driver's lock-wait error.

After the worker's start() returned the tap is closed: any further statement is recorded as
`after_return` and refused with ScheduleOver (a BaseException, which ends the thread that
sent it): nothing of a stopped worker may reserve, run or write again.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from dj_consumer.store import Store
from tests.model.jobs import Trace
from tests.model.schedule import Fault


class ScheduleOver(BaseException):
    """A statement from a worker whose start() has returned."""


def classify(sql: str) -> str:
    """The write point a statement belongs to (schedule.WRITE_POINTS), or read / setup."""
    s = " ".join(sql.split()).upper()
    if "BEGIN NOT ATOMIC" in s or s.startswith("START TRANSACTION"):
        return "reserve"
    if s.startswith("INSERT"):
        return "insert"
    if s.startswith(("DELETE", "WITH DONE AS (DELETE")):
        return "delete"
    if s.startswith("UPDATE"):
        sets, _, where = s.partition(" WHERE ")
        if "FAILED_AT =" in sets:
            return "fail"
        if "SET ATTEMPTS =" in sets:
            return "reschedule"
        if "SET LAST_ERROR =" in sets:
            return "interrupt"
        if "LOCKED_BY = NULL" in sets:
            return "release" if where.startswith("LOCKED_BY =") else "unclaim"
        return "claim" if "LOCKED_BY =" in sets else "renew"
    if s.startswith("SELECT") and "RUN_AT <=" in s:
        return "reserve"
    return "read" if s.startswith("SELECT") else "setup"


_QMARK_ID = re.compile(r"(?<![\w.@])ID\s*(=|IN\s*\((\s*\?\s*,)*)\s*$", re.I)


def target_ids(sql: str, params: Any) -> list[int]:
    """The row ids a statement is aimed at (id, done_id, the ids list), not excluded ones."""
    if isinstance(params, dict):
        keys = [k for k in params if k in ("id", "done_id") or k.startswith("ids_")]
        return [int(params[k]) for k in keys if isinstance(params[k], int)]
    if not isinstance(params, list | tuple):
        return []
    ids = []
    for i, mark in enumerate(re.finditer(r"\?", sql)):
        if i < len(params) and _QMARK_ID.search(sql[:mark.start()]) and isinstance(params[i], int):
            ids.append(params[i])
    return ids


class Tap:
    """One worker's fault plan and what happened on its connections."""

    def __init__(self, worker: str, faults: list[Fault], trace: Trace, *, backend: str,
                 url: str, table: str) -> None:
        self.worker, self.trace, self.backend, self.table = worker, trace, backend, table
        self.url = url
        self._plan = [(f, False) for f in faults]
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def _due(self, kind: str) -> Fault | None:
        with self._lock:
            self._counts[kind] += 1
            for i, (fault, fired) in enumerate(self._plan):
                if not fired and fault.at == kind and self._counts[kind] >= fault.nth:
                    self._plan[i] = (fault, True)
                    return fault
        return None

    def execute(self, conn: _Connection, cursor: Any, sql: str, params: Any, kw: dict[str, Any]) -> Any:
        kind = classify(sql)
        if self.closed:
            self.trace.emit("after_return", worker=self.worker, stmt=kind, sql=sql[:200])
            raise ScheduleOver(self.worker)
        ids = target_ids(sql, params)
        if kind == "interrupt":  # an unlock with attempts unchanged: it excuses one re-run
            self.trace.emit("interrupt_sql", worker=self.worker, ids=ids)
        fault = None
        if kind not in ("read", "setup"):
            object.__setattr__(conn, "dirty", True)  # a commit now ends real work
            fault = self._due(kind)
        if fault is None:
            return cursor.execute(sql, params, **kw) if params is not None else cursor.execute(sql, **kw)
        self.trace.emit("fault", worker=self.worker, fault=fault.kind, stmt=kind, ids=ids)
        return self._inject(fault, conn, cursor, sql, params, kw, ids)

    def commit(self, conn: _Connection) -> None:
        if self.closed:
            self.trace.emit("after_return", worker=self.worker, stmt="commit", sql="COMMIT")
            raise ScheduleOver(self.worker)
        # Only the commit of a unit of work is a write point, not a session setup's.
        fault = self._due("commit") if conn.dirty else None
        object.__setattr__(conn, "dirty", False)
        if fault is None or fault.kind not in ("lost_reply", "before", "non_db"):
            conn.real.commit()
            return
        self.trace.emit("fault", worker=self.worker, fault=fault.kind, stmt="commit", ids=[])
        if fault.kind == "lost_reply":
            conn.real.commit()
        self._fail(conn, fault.kind)

    def _inject(self, fault: Fault, conn: _Connection, cursor: Any, sql: str, params: Any,
                kw: dict[str, Any], ids: list[int]) -> Any:
        def run() -> Any:
            return cursor.execute(sql, params, **kw) if params is not None else cursor.execute(sql, **kw)

        if fault.kind in ("before", "non_db"):
            self._fail(conn, fault.kind)
        if fault.kind == "kill":
            self._kill(conn)
            return run()  # the driver's own error, from a connection killed under it
        if fault.kind == "lock_wait":
            if self.backend != "sqlite" and len(ids) == 1:
                return self._lock_wait(conn, ids[0], run)
            self._fail(conn, "lock_wait")
        result = run()
        if self.backend == "mysql":
            while cursor.nextset():  # every statement of a script ran (and committed)
                pass
        self._fail(conn, "lost_reply")
        return result

    def _fail(self, conn: _Connection, kind: str) -> None:
        """Raise what the driver raises for `kind`, leaving the connection as it would be."""
        if kind == "non_db":
            raise UnicodeEncodeError("utf-8", "\udce9", 0, 1, "surrogates not allowed")
        if self.backend == "sqlite":
            raise sqlite3.OperationalError("database is locked")
        if kind == "lock_wait":
            raise _lock_error(self.backend)
        if self.backend == "mysql":
            conn.real._force_close()  # as pymysql does itself when the socket fails
        else:
            conn.real.close()
        if self.backend == "mysql":
            import pymysql

            code, text = (2013, "Lost connection to server during query") if kind == "lost_reply" \
                else (2006, "Server has gone away")
            raise pymysql.err.OperationalError(code, text)
        import psycopg

        raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")

    def _side(self) -> sa.Engine:
        return sa.create_engine(self.url, poolclass=sa.NullPool)

    def _kill(self, conn: _Connection) -> None:
        if self.backend == "sqlite":
            conn.real.close()
            return
        engine = self._side()
        try:
            with engine.connect() as side:
                if self.backend == "mysql":
                    side.exec_driver_sql(f"KILL CONNECTION {int(conn.real.thread_id())}")
                else:
                    side.exec_driver_sql(f"SELECT pg_terminate_backend({int(conn.real.info.backend_pid)})")
                    side.commit()
        finally:
            engine.dispose()
        time.sleep(0.1)  # the server ends the session asynchronously

    def _lock_wait(self, conn: _Connection, row_id: int, run: Callable[[], Any]) -> Any:
        """Another session holds the row; the statement waits 1 s for it and gives up. (If the
        worker's own open transaction holds the row, no other session can: the driver's
        lock-wait error stands in.)"""
        engine = self._side()
        side = engine.connect()
        try:
            try:
                side.exec_driver_sql(
                    f"SELECT id FROM {self.table} WHERE id = {int(row_id)} FOR UPDATE NOWAIT")
            except sa.exc.DBAPIError:
                self._fail(conn, "lock_wait")
            setting = ("innodb_lock_wait_timeout", "1", "DEFAULT") if self.backend == "mysql" \
                else ("lock_timeout", "'1s'", "DEFAULT")
            with conn.real.cursor() as cur:
                cur.execute(f"SET SESSION {setting[0]} = {setting[1]}")
            try:
                return run()
            finally:
                _reset(conn, setting)
        finally:
            side.rollback()
            side.close()
            engine.dispose()


def _reset(conn: _Connection, setting: tuple[str, str, str]) -> None:
    """Put the session's lock wait back (unless the connection or its transaction is gone:
    then the SET goes with it)."""
    try:
        with conn.real.cursor() as cur:
            cur.execute(f"SET SESSION {setting[0]} = {setting[2]}")
    except Exception:
        pass


def _lock_error(backend: str) -> Exception:
    if backend == "mysql":
        import pymysql

        error: Exception = pymysql.err.OperationalError(
            1205, "Lock wait timeout exceeded; try restarting transaction")
        return error
    import psycopg.errors

    error = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    return error


class _Cursor:
    def __init__(self, real: Any, conn: _Connection) -> None:
        self.real, self.conn = real, conn

    def execute(self, sql: str, params: Any = None, **kw: Any) -> Any:
        return self.conn.tap.execute(self.conn, self.real, sql, params, kw)

    def executemany(self, sql: str, seq: Any, **kw: Any) -> Any:
        if self.conn.tap.closed:
            raise ScheduleOver(self.conn.tap.worker)
        return self.real.executemany(sql, seq, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __iter__(self) -> Any:
        return iter(self.real)

    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()


class _Connection:
    """The real DB-API connection with its cursors and commit routed through the tap."""

    def __init__(self, real: Any, tap: Tap) -> None:
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "tap", tap)
        object.__setattr__(self, "dirty", False)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(conn, psycopg.Connection), as psycopg asks
        return type(self.real)

    def cursor(self, *args: Any, **kw: Any) -> _Cursor:
        return _Cursor(self.real.cursor(*args, **kw), self)

    def commit(self) -> None:
        self.tap.commit(self)

    def rollback(self) -> None:
        object.__setattr__(self, "dirty", False)
        self.real.rollback()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.real, name, value)


def install(store: Store, tap: Tap) -> Tap:
    """Route every connection `store` makes through `tap`. Call before its first connection."""
    engines = {id(e): e for e in (store.db.engine, store.db.tx_engine)}

    def connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> _Connection:
        return _Connection(dialect.connect(*cargs, **cparams), tap)

    for engine in engines.values():
        event.listen(engine, "do_connect", connect)
    return tap
