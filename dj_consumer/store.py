"""Rows in and out of delayed_jobs: the row protocol. Nothing here runs a job.

The statements (sql.py) follow delayed_job_active_record 4.1 (docs/protocol.md, "Row
protocol"); each outcome write is fenced by `locked_by = me`, so a worker that lost its lock
never writes. Connections and retries live in db.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from dj_consumer.config import Config
from dj_consumer.db import (
    Connections,
    is_refusal,
    is_transient,
    safe_url,
    unreachable,
)
from dj_consumer.errors import ConfigError
from dj_consumer.insert_once import insert_once
from dj_consumer.models import JobRow
from dj_consumer.rejected import Rejected
from dj_consumer.reserve import SCAN, BacklogMark, Done, Tools, choose, mysql_script, to_job
from dj_consumer.reserve.base import Accept
from dj_consumer.reserve.scan import scan_many, scan_one
from dj_consumer.run import Deferred, Extra
from dj_consumer.schema import check_columns
from dj_consumer.server import (
    ServerInfo,
    check_strategy,
    mysql_has_skip_locked,
    server_info,
    text_limit,
    warn_if_short_lease,
)
from dj_consumer.sql import ReserveSQL, Statements

__all__ = ["ServerInfo", "Store", "is_transient", "mysql_has_skip_locked"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Store:
    """delayed_jobs access for one worker process."""

    def __init__(
        self,
        config: Config,
        *,
        name_filters: Sequence[Sequence[str]] = (),
        retry_window: float = 60.0,
    ) -> None:
        self.config = config
        self.retry_window = retry_window
        url = config.url
        self.dialect = url.get_backend_name()
        if self.dialect == "mariadb":
            self.dialect = "mysql"
        if self.dialect not in ("mysql", "postgresql", "sqlite"):
            raise ConfigError(
                f"database_url uses {url.drivername!r}; dj_consumer supports mysql+pymysql, "
                "postgresql+psycopg and sqlite"
            )
        self.db = Connections(url, config, self.dialect, retry_window=retry_window)
        self.table = self.engine.dialect.identifier_preparer.quote(config.table_name)
        self.server: ServerInfo | None = None
        self.last_error_limit = 1 << 20
        self._name_filters = [tuple(p) for p in name_filters]
        self._names: tuple[str, ...] = ()
        self._rejected = Rejected()
        self.mark = BacklogMark()
        self._build_statements()
        self.tools = Tools(self.db, config, self.dialect, self.sql)
        self.reserver = choose(self.strategy, self.tools)

    # -- setup -----------------------------------------------------------------------------

    def check(self) -> ServerInfo:
        """Fail fast, with one clear line, on an unreachable database or a table Rails did not make."""
        try:
            with self.engine.connect() as conn:
                columns = check_columns(conn, self.config.table_name, safe_url(self.config.url))
                self.last_error_limit = text_limit(self.dialect, columns["last_error"]["type"])
                self.server = server_info(conn, self.dialect)
                check_strategy(self.config.reserve_sql, self.server)
                warn_if_short_lease(self.config)
        except ConfigError:
            raise
        except SQLAlchemyError as exc:
            raise unreachable(self.config.url, exc) from None
        self._build_statements()
        self.tools.mariadb = self.server.mariadb
        self.reserver = choose(self.strategy, self.tools)  # now that the server is known
        return self.server

    def missing_privileges(self) -> list[str]:
        """Which of SELECT, UPDATE, DELETE, INSERT on the table this user lacks, where the
        server can say so cheaply (not SQLite: a file has no grants)."""
        if self.dialect == "sqlite":
            return []
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                granted = conn.execute(self.sql.has_privileges, {"t": self.table}).one()
                return [p for p, ok in zip(self.sql.privileges, granted, strict=True) if not ok]
            missing = []
            for privilege, probe in self.sql.privileges.items():
                try:
                    conn.execute(text(probe))
                except SQLAlchemyError as exc:
                    if not is_refusal(exc):
                        raise
                    missing.append(privilege)
            return missing

    @property
    def strategy(self) -> str:
        """How reserve locks a row: Rails' own statements per dialect, SKIP LOCKED where it helps."""
        if self.config.reserve_sql != "auto":
            return self.config.reserve_sql
        # Only strategies that know a row's name *before* writing to it (by parsing it, or by
        # a beginning only Psych's dump of that name has): a handler that merely resembles one
        # of ours (FooBar for Foo) must never be locked, even for an instant.
        if self.dialect in ("mysql", "postgresql") and self.server is not None \
                and self.server.skip_locked:
            return "skip_locked"
        return "default_sql"

    def close(self) -> None:
        self.db.close()

    def set_name_filters(self, name_filters: Sequence[Sequence[str]],
                         names: Sequence[str] = ()) -> None:
        """The LIKE prefilters of the names we can run, and the names themselves (whose sure
        beginnings, ruby_yaml.sure_prefixes, let a reserve claim before parsing); rebuilds
        the statements."""
        self._name_filters = [tuple(p) for p in name_filters]
        self._names = tuple(names)
        self._rejected.clear()  # a row turned down may be ours now
        self._build_statements()

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def _build_statements(self) -> None:
        self.sql = Statements(
            table=self.table, dialect=self.dialect, config=self.config,
            skip_locked=bool(self.server and self.server.skip_locked),
            name_filters=self._name_filters, names=self._names,
            mariadb=bool(self.server and self.server.mariadb),
        )
        if hasattr(self, "tools"):
            self.tools.sql = self.sql

    def ts(self, value: datetime) -> datetime:
        """MySQL `datetime` keeps no fractions; drop them as ActiveRecord does before writing."""
        return value.replace(microsecond=0) if self.dialect == "mysql" else value

    # -- the protocol ----------------------------------------------------------------------

    @property
    def folds_deletes(self) -> bool:
        """Does reserve save a commit by deleting the previous success in its transaction?"""
        return self.reserver.folds_deletes

    @property
    def folds_extras(self) -> bool:
        """... and can that DELETE carry an outcome participant's statements (run.Extra)?"""
        return self.reserver.folds_extras

    def delete_with(self, job_id: int, me: str, extra: Extra) -> bool:
        """MySQL: a success's fenced DELETE and `extra` in one transaction and round trip."""
        return mysql_script.delete_with(self.tools, job_id, me, extra)

    def reserve(self, me: str, now: datetime, accept: Accept,
                finished: Deferred | None = None) -> JobRow | None:
        """Lock the first ready row that `accept` says we can run (the row carries what
        accept made of its handler); None when no ready row of ours is left: a reserve reads
        past every row it cannot take (not ours, or taken by another worker first) until it
        finds one or the ready rows end (reserve/scan.py).

        `finished`, the slot's previous success, is deleted with it, in one commit where the
        strategy allows (folds_deletes), and settled: whether it was still ours."""
        accept = self._rejected.wrap(accept)

        def once() -> tuple[JobRow | None, bool]:
            done = Done(finished, self.reserver.folds_extras)
            row = self._reserve_once(me, now, accept, done)
            if done.id is not None and done.deleted is None:
                done.deleted = self.delete(done.id, me) if done.extra is None \
                    else self.delete_with(done.id, me, done.extra)
            return row, bool(done.deleted)
        row, deleted = self.db.retrying("reserve", once)
        if finished is not None:
            finished.settle(deleted)
        return row

    def _reserve_once(self, me: str, now: datetime, accept: Accept, done: Done) -> JobRow | None:
        params = self.sql.ready_params(me, now, self.ts)
        params["locked_at"] = self.ts(now)
        mark = self.mark.get()
        if mark is not None:
            params["mark_p"], params["mark_run_at"] = mark[0], self.sql.earlier(mark[1])
            row = self._reserve_with(self.sql.marked, params, accept, done)
            if row is not None:
                self.mark.passed(row)
                return row
            self.mark.clear()
        started = time.perf_counter()
        row = self._reserve_with(self.sql.plain, params, accept, done)
        if row is not None:
            self.mark.scanned(row, time.perf_counter() - started)
        return row

    def _reserve_with(self, sql: ReserveSQL, params: dict[str, Any], accept: Accept,
                      done: Done) -> JobRow | None:
        """The strategy's own statements first (the hot path); when they leave it open (the
        row they found was not ours, or another worker took it first), the scan goes on."""
        found = self.reserver.one(params, accept, sql, done)
        return scan_one(self.tools, params, accept, sql, done) if found is SCAN else found

    def reserve_many(self, me: str, now: datetime, accept: Accept, limit: int) -> list[JobRow]:
        """Lock up to `limit` ready rows (reserve_batch), in ready order; [] only when no
        ready row of ours is left (the scan goes on past rows it cannot take)."""
        accept = self._rejected.wrap(accept)

        def once() -> list[JobRow]:
            params = dict(self.sql.ready_params(me, now, self.ts), locked_at=self.ts(now), n=limit)
            mine, full = self.reserver.many(params, accept)
            return mine if mine or not full else scan_many(self.tools, params, accept, limit)
        return self.db.retrying("reserve", once)

    def delete_many(self, ids: list[int], me: str) -> int:
        return self._retried("delete_many", lambda conn: int(
            self.db.run(conn, self.sql.delete_ids, {"ids": ids, "me": me}).rowcount))

    def unclaim_many(self, ids: list[int], me: str) -> int:
        return self._retried("unclaim", lambda conn: int(
            self.db.run(conn, self.sql.unclaim_ids, {"ids": ids, "me": me}).rowcount))

    def renew_all(self, me: str, now: datetime) -> int:
        return self._retried("renew", lambda conn: int(
            self.db.run(conn, self.sql.renew_all, {"me": me, "now": self.ts(now)}).rowcount))

    def delete(self, job_id: int, me: str) -> bool:
        """Success: the row goes away (Delayed::Worker#run → job.destroy)."""
        return self._write("delete", self.sql.delete, {"id": job_id, "me": me})

    def reschedule(self, job_id: int, me: str, *, attempts: int, run_at: datetime,
                   last_error: str, now: datetime) -> bool:
        return self._write("reschedule", self.sql.reschedule, {
            "id": job_id, "me": me, "attempts": attempts, "run_at": self.ts(run_at),
            "last_error": self.clip(last_error), "now": self.ts(now),
        })

    def fail(self, job_id: int, me: str, *, attempts: int, last_error: str, now: datetime) -> bool:
        return self._write("fail", self.sql.fail, {
            "id": job_id, "me": me, "attempts": attempts, "last_error": self.clip(last_error),
            "now": self.ts(now),
        })

    def interrupt(self, job_id: int, me: str, *, last_error: str, now: datetime) -> bool:
        """Unlock without spending an attempt (shutdown interrupted the job)."""
        return self._write("interrupt", self.sql.interrupt, {
            "id": job_id, "me": me, "last_error": self.clip(last_error), "now": self.ts(now),
        })

    def renew(self, job_id: int, me: str, now: datetime) -> bool:
        return self._write("renew", self.sql.renew, {"id": job_id, "me": me, "now": self.ts(now)})

    def release(self, me: str, keep: Sequence[int] = ()) -> int:
        """Delayed::Job.clear_locks!: unlock every row this worker name holds, but `keep`
        (successes whose DELETE could not be written: unlocked, they would run again)."""
        if keep:
            return self._retried("release", lambda conn: int(conn.execute(
                self.sql.release_all_except, {"me": me, "ids": list(keep)}).rowcount))
        return self._retried("release", lambda conn: int(
            conn.execute(self.sql.release_all, {"me": me}).rowcount))

    def owner(self, job_id: int) -> tuple[bool, str | None]:
        """(row exists, its locked_by) — to say why a fenced write touched nothing."""
        row = self._retried("owner", lambda conn: conn.execute(self.sql.owner, {"id": job_id}).first())
        return (False, None) if row is None else (True, row[0])

    def get(self, job_id: int) -> JobRow | None:
        row = self._retried("get", lambda conn: conn.execute(self.sql.get, {"id": job_id}).first())
        return None if row is None else to_job(row)

    def last_error(self, job_id: int) -> str | None:
        value = self._retried("last_error", lambda conn: conn.execute(
            self.sql.last_error, {"id": job_id}).scalar())
        return None if value is None else str(value)

    def insert(self, handler: str, *, now: datetime, run_at: datetime | None = None,
               queue: str | None = None, priority: int = 0) -> int:
        """Delayed::Job.enqueue: a new row (run_at defaults to now, like set_default_run_at),
        written at most once (dj_consumer.insert_once)."""
        params = {"handler": handler, "priority": priority, "queue": queue,
                  "run_at": self.ts(run_at or now), "now": self.ts(now)}
        return insert_once(self.db, self.sql, self.dialect, params)

    def clip(self, value: str) -> str:
        """last_error as every database takes it (printable, below), truncated to what the
        column holds (MySQL TEXT: 65,535 bytes)."""
        value = printable(value)
        data = value.encode("utf-8")
        if len(data) <= self.last_error_limit:
            return value
        return data[: self.last_error_limit].decode("utf-8", "ignore")

    # -- plumbing --------------------------------------------------------------------------

    def _write(self, op: str, stmt: TextClause, params: dict[str, Any]) -> bool:
        return self._retried(op, lambda conn: bool(self.db.run(conn, stmt, params).rowcount == 1))

    def _retried(self, op: str, work: Callable[[Connection], T]) -> T:
        """`work` on this thread's connection, run again on a transient error (db.retrying)."""
        def run() -> T:
            with self.db.connection() as conn:
                return work(conn)
        return self.db.retrying(op, run)


def printable(text: str) -> str:
    """Text every driver can send and every database can store: a lone surrogate (a byte a
    handler decoded with surrogateescape, say a file name) written as \\xNN or \\uDXXX, NUL as
    \\x00. Sent as is, the driver raises UnicodeEncodeError (PostgreSQL refuses NUL) and the
    outcome could never be written."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(_escape(c) if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
