"""Connections for the store: engines, one kept connection per thread, the driver fast path,
and retries of transient errors around whole units of work."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from dj_consumer.config import Config
from dj_consumer.dberrors import is_refusal, is_transient
from dj_consumer.engine import MIN_IO_TIMEOUT, io_timeout, make_engine, safe_url
from dj_consumer.errors import ConfigError
from dj_consumer.server import ServerInfo, mysql_has_skip_locked

log = structlog.get_logger(__name__)
T = TypeVar("T")

__all__ = ["MIN_IO_TIMEOUT", "Connections", "ServerInfo", "io_timeout", "is_refusal",
           "is_transient", "make_engine", "mysql_has_skip_locked", "safe_url", "short_error",
           "unreachable"]

class Connections:
    """Each thread's own connection to one database, kept between statements."""

    def __init__(self, url: URL, config: Config, dialect: str, *, retry_window: float = 60.0) -> None:
        self.dialect = dialect
        self.retry_window = retry_window
        self.sql_log = config.sql_log  # SQLAlchemy's echo logs only what goes through it
        self.engine = make_engine(url, config, autocommit=True)
        # Transactions (SKIP LOCKED reservation) use their own pool, so no connection ever
        # switches isolation level back and forth.
        self.tx_engine = make_engine(url, config, autocommit=False) if dialect != "sqlite" else self.engine
        self._conns: dict[tuple[int, bool], Connection] = {}
        self._conns_lock = threading.Lock()
        self._closed = False
        # Driver SQL per statement, per expanded list length, per script (see run_script).
        self._raw: dict[Any, str] = {}
        self._dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error

    def close(self) -> None:
        with self._conns_lock:
            self._closed = True  # a thread still in a statement closes its connection after it
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        self.engine.dispose()
        if self.tx_engine is not self.engine:
            self.tx_engine.dispose()

    def run(self, conn: Connection, stmt: TextClause, params: dict[str, Any],
            constants: Mapping[str, Any] | None = None) -> Any:
        """Execute on the driver's cursor when the statement allows (the hot path: about a
        third of SQLAlchemy's per-statement cost), else through SQLAlchemy.

        On PostgreSQL, `constants` (binds that never change for this worker: name patterns,
        leases) are written into the cached SQL once as literals, instead of being sent with
        every call (the reserve's statement has thirty of them); the other keys of `params`
        are the binds."""
        if self.dialect == "sqlite" or self.sql_log or not all(params.get(k, True) for k in _LISTS):
            return conn.execute(stmt, params)
        lists = any(k in params for k in _LISTS)
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        if self.dialect == "postgresql" and not lists:
            return self._run_pg(conn, dbapi_conn, stmt, params, constants)
        sql = self._compiled(stmt)
        if lists:
            sql, params = self._expanded(stmt, sql, params)
        cursor = dbapi_conn.cursor()
        try:
            if self.dialect == "postgresql":
                # A list of ids is a new statement per length: psycopg prepares it if it recurs.
                cursor.execute(sql, params, prepare=None)  # type: ignore[call-arg]
            else:
                cursor.execute(sql, params)
            return _RawResult(cursor)
        except self._dbapi_error as exc:
            raise self._translate(exc, conn, dbapi_conn, cursor, sql, params) from exc
        finally:
            cursor.close()

    def _run_pg(self, conn: Connection, dbapi_conn: Any, stmt: TextClause, params: dict[str, Any],
                constants: Mapping[str, Any] | None) -> Any:
        """PostgreSQL's hot path: prepared from the first run (the same few statements run for
        every job), on one cursor kept per driver connection (a new cursor per statement
        costs more client CPU than the rest of the call: its adapters, its type caches)."""
        if constants:
            key = (stmt, _CONSTANTS)
            sql = self._raw.get(key)
            if sql is None:
                from psycopg.sql import Literal

                sql = self._raw[key] = _inline(self._compiled(stmt), constants,
                                               lambda v: Literal(v).as_string(dbapi_conn))
        else:
            sql = self._compiled(stmt)
        info = conn.connection.info
        cursor = info.get(_CURSOR)
        if cursor is None or cursor.closed or cursor.connection is not dbapi_conn:
            cursor = info[_CURSOR] = dbapi_conn.cursor()
        try:
            cursor.execute(sql, params, prepare=True)
            return _RawResult(cursor, pg=True)
        except self._dbapi_error as exc:
            raise self._translate(exc, conn, dbapi_conn, cursor, sql, params) from exc

    @property
    def scripts(self) -> bool:
        """Can run_script send several statements in one round trip (MySQL multi-statements)?"""
        return self.dialect == "mysql" and not self.sql_log

    def run_script(self, conn: Connection, stmts: list[TextClause], params: dict[str, Any],
                   constants: Mapping[str, Any] | None = None, *, block: bool = False,
                   on_rows: Callable[[_RawResult], None] | None = None) -> list[_RawResult]:
        """Several statements in one round trip (MySQL only): one result per statement, or
        with `block` (MariaDB) one compound statement, `BEGIN NOT ATOMIC … END`, whose
        results are only its SELECTs' and one OK (the server sends one reply, not one per
        statement, and the client wakes once).

        `constants` (binds that never change for this worker: name patterns, queues) are
        written into the cached SQL once, escaped by the driver, instead of on every call.
        `on_rows` sees each result with rows as soon as it arrives, while the server is still
        running the statements after it (a COMMIT, say): client work there costs no time.
        """
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        # The escaping depends on the server's NO_BACKSLASH_ESCAPES mode.
        key = (tuple(stmts), block, dbapi_conn.server_status & _NO_BACKSLASH_ESCAPES)
        sql = self._raw.get(key)
        if sql is None:
            sql = "; ".join(self._compiled(stmt) for stmt in stmts)
            if block:
                sql = f"BEGIN NOT ATOMIC {sql}; END"
            if constants:
                sql = _inline(sql, constants, dbapi_conn.escape)
            self._raw[key] = sql
        if constants:
            params = {k: v for k, v in params.items() if k not in constants}
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, params)
            results = []
            while True:
                result = _RawResult(cursor)
                results.append(result)
                if on_rows is not None and result.has_rows:
                    on_rows(result)
                if not cursor.nextset():
                    return results
        except self._dbapi_error as exc:
            raise self._translate(exc, conn, dbapi_conn, cursor, sql, params) from exc
        finally:
            cursor.close()

    def _expanded(self, stmt: TextClause, sql: str,
                  params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """`IN :ids` with one bind per element, as SQLAlchemy's expanding binds render it,
        cached per list length (a batch's ids)."""
        sizes = tuple(len(params[k]) if k in params else -1 for k in _LISTS)
        key = (stmt, sizes)
        expanded = self._raw.get(key)
        if expanded is None:
            expanded = sql
            for name, size in zip(_LISTS, sizes, strict=True):
                expanded = expanded.replace(
                    f"__[POSTCOMPILE_{name}]", ", ".join(f"%({name}_{i})s" for i in range(size)))
            self._raw[key] = expanded
        flat = {k: v for k, v in params.items() if k not in _LISTS}
        for name in _LISTS:
            for i, value in enumerate(params.get(name, ())):
                flat[f"{name}_{i}"] = value
        return expanded, flat

    def _compiled(self, stmt: TextClause) -> str:
        sql = self._raw.get(stmt)
        if sql is None:
            sql = self._raw[stmt] = str(stmt.compile(dialect=self.engine.dialect))
        return sql

    def _translate(self, exc: Exception, conn: Connection, dbapi_conn: Any, cursor: Any,
                   sql: str, params: dict[str, Any]) -> Exception:
        """A driver error as SQLAlchemy's, invalidating the connection on a disconnect."""
        invalidated = self.engine.dialect.is_disconnect(exc, dbapi_conn, cursor)  # type: ignore[arg-type]
        if invalidated:
            conn.invalidate(exc)
        return DBAPIError.instance(sql, params, exc, self._dbapi_error,
                                   connection_invalidated=invalidated, dialect=self.engine.dialect)

    @contextmanager
    def connection(self, *, tx: bool = False) -> Iterator[Connection]:
        """This thread's own connection, kept between statements (no checkout per job).

        A connection that saw any error is closed, not kept: the retry gets a fresh one.
        """
        key = (threading.get_ident(), tx)
        with self._conns_lock:
            conn = self._conns.pop(key, None)
        if conn is None or conn.closed or conn.invalidated:
            self._prune()
            conn = (self.tx_engine if tx else self.engine).connect()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._conns_lock:
            if not self._closed:
                self._conns[key] = conn
                return
        conn.invalidate()  # its pool was disposed: close the driver connection itself
        conn.close()

    def _prune(self) -> None:
        """Close the kept connections of threads that have ended."""
        alive = {t.ident for t in threading.enumerate()}
        with self._conns_lock:
            dead = [k for k in self._conns if k[0] not in alive]
            conns = [self._conns.pop(k) for k in dead]
        for conn in conns:
            conn.close()

    def retrying(self, op: str, fn: Callable[[], T]) -> T:
        """Run `fn`; on a transient error, run it again with backoff for up to retry_window."""
        try:
            return fn()  # the common case, without building a Retrying per statement
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("db.retrying", op=op, attempt=1, error=short_error(exc))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("db.retrying", op=op, attempt=state.attempt_number + 1,
                        error=short_error(exc) if exc else None)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(self.retry_window),
            wait=wait_exponential(multiplier=0.05, max=5),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


# The list binds (`IN :ids`) the driver fast path expands itself; an empty one goes through
# SQLAlchemy, which knows how to write an empty IN.
_LISTS = ("ids",)
# Keys of Connections._raw (SQL with the constants inlined) and of a driver connection's
# info (its kept cursor, PostgreSQL).
_CONSTANTS = "constants"
_CURSOR = "dj_consumer.cursor"
# pymysql.constants.SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES
_NO_BACKSLASH_ESCAPES = 512
# psycopg.pq.ExecStatus.TUPLES_OK
_TUPLES_OK = 2
# A pyformat bind, or an escaped percent sign (which must stay escaped).
_PYFORMAT = re.compile(r"%%|%\((\w+)\)s")


def _inline(sql: str, values: Mapping[str, Any], escape: Callable[[Any], str]) -> str:
    """`sql` (pyformat) with the binds named in `values` replaced by the driver's literals."""
    def literal(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None or name not in values:
            return match.group(0)
        return escape(values[name]).replace("%", "%%")
    return _PYFORMAT.sub(literal, sql)


class _RawResult:
    """The little of a Result that the store reads, from a driver cursor already executed."""

    __slots__ = ("_rows", "has_rows", "lastrowid", "rowcount")

    def __init__(self, cursor: Any, *, pg: bool = False) -> None:
        self.rowcount = cursor.rowcount
        if pg:  # (psycopg's description builds a Column per column, on every call)
            self.lastrowid = None
            res = cursor.pgresult
            self.has_rows = res is not None and (res.nfields > 0 or res.status == _TUPLES_OK)
        else:
            self.lastrowid = getattr(cursor, "lastrowid", None)
            self.has_rows = cursor.description is not None
        self._rows = cursor.fetchall() if self.has_rows else []

    def first(self) -> Any:
        return _RowTuple(self._rows[0]) if self._rows else None

    def all(self) -> list[Any]:
        return [_RowTuple(r) for r in self._rows]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self._rows[0][0]


class _RowTuple(tuple):  # type: ignore[type-arg]
    """A driver row read by ROW_COLUMNS' names, like a SQLAlchemy Row."""

    __slots__ = ()
    id = property(lambda self: self[0])
    priority = property(lambda self: self[1])
    attempts = property(lambda self: self[2])
    handler = property(lambda self: self[3])
    run_at = property(lambda self: self[4])
    queue = property(lambda self: self[5])
    # Reserve statements read only the first six columns (sql.RESERVE_COLUMNS).
    locked_at = property(lambda self: self[6] if len(self) > 6 else None)
    locked_by = property(lambda self: self[7] if len(self) > 7 else None)
    failed_at = property(lambda self: self[8] if len(self) > 8 else None)


def unreachable(url: URL, exc: BaseException) -> ConfigError:
    """The one line a worker or command prints when the database cannot be asked at start."""
    from dj_consumer.dberrors import describe

    return ConfigError(describe(exc, url))


def short_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


