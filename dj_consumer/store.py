"""Rows in and out of delayed_jobs. Every SQL statement lives here; nothing here runs a job.

The statements follow delayed_job_active_record 4.1 (see the README, "Row protocol"); each
outcome write is fenced by `locked_by = me`, so a worker that lost its lock never writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import bindparam, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import DateTime, Integer, String, Text
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from dj_consumer.models import JobRow
from dj_consumer.schema import REQUIRED_COLUMNS

log = structlog.get_logger(__name__)
T = TypeVar("T")

ROW_COLUMNS = "id, priority, attempts, handler, run_at, queue, locked_at, locked_by, failed_at"

# MySQL error codes worth retrying: lock wait timeout, deadlock, connection gone or refused,
# server shutting down, connection killed.
_MYSQL_TRANSIENT = {1205, 1213, 2003, 2006, 2013, 2055, 1053, 1927, 4031, 1040}
# PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not available, shutdown, and
# the whole 08 class (connection exceptions).
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}


def is_transient(exc: BaseException) -> bool:
    """Errors that a retry of the whole unit of work can cure."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
        return True
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate in _PG_TRANSIENT or sqlstate.startswith("08")):
        return True
    message = str(orig).lower()
    return "database is locked" in message or ("connection" in message and "closed" in message)


#: How long the backlog mark is trusted before a reserve rescans from the first ready row. A
#: row that becomes ready *behind* the mark (an expired lock, a retry by hand, a new row with
#: a lower priority number) waits at most this long more. See the README.
MARK_TTL = 30.0
#: The mark is only used once a full reserve is slow (a backlog is there): with a small table,
#: every reserve looks at every ready row, and the order is exact.
MARK_MIN_SCAN = 0.005


@dataclass(frozen=True)
class _ReserveSQL:
    candidates: TextClause
    lock_next: TextClause
    lock_next_excluding: TextClause
    update_returning: TextClause
    update_returning_excluding: TextClause
    update_limit: TextClause
    update_limit_excluding: TextClause


@dataclass(frozen=True)
class ServerInfo:
    dialect: str
    version: str
    skip_locked: bool


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
        self.engine = _engine(url, config, autocommit=True)
        # Transactions (SKIP LOCKED reservation) use their own pool, so no connection ever
        # switches isolation level back and forth.
        self.tx_engine = _engine(url, config, autocommit=False) if self.dialect != "sqlite" else self.engine
        self.table = self.engine.dialect.identifier_preparer.quote(config.table_name)
        self.server: ServerInfo | None = None
        self.last_error_limit = 1 << 20
        self._name_filters = [tuple(p) for p in name_filters]
        self._conns: dict[tuple[int, bool], Connection] = {}
        self._raw: dict[TextClause, str] = {}
        self._dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        self._conns_lock = threading.Lock()
        self._mark: tuple[int, datetime] | None = None
        self._mark_since = 0.0
        self._mark_lock = threading.Lock()
        self._build_statements()

    # -- setup -----------------------------------------------------------------------------

    def check(self) -> ServerInfo:
        """Fail fast, with one clear line, on an unreachable database or a table Rails did not make."""
        try:
            with self.engine.connect() as conn:
                insp = inspect(conn)
                try:
                    columns = {c["name"]: c for c in insp.get_columns(self.config.table_name)}
                except NoSuchTableError:
                    raise ConfigError(
                        f"table {self.config.table_name!r} does not exist in {_safe(self.config.url)}; "
                        "run Rails' delayed_job migration, or `dj-consumer schema --create` for a new one"
                    ) from None
                missing = [c for c in REQUIRED_COLUMNS if c not in columns]
                if missing:
                    raise ConfigError(
                        f"table {self.config.table_name!r} has no column {missing[0]!r}"
                        + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
                        + "; it is not a delayed_job table, or its migration is incomplete"
                    )
                self.last_error_limit = _text_limit(self.dialect, columns["last_error"]["type"])
                self.server = self._server_info(conn)
                self._check_strategy(self.server)
        except ConfigError:
            raise
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"cannot reach the database at {_safe(self.config.url)}: {_short(exc)}"
            ) from None
        self._build_statements()
        return self.server

    @property
    def strategy(self) -> str:
        """How reserve locks a row: Rails' own statements per dialect, SKIP LOCKED where it helps."""
        if self.config.reserve_sql != "auto":
            return self.config.reserve_sql
        if self.dialect == "postgresql":
            return "update_returning"
        if self.dialect == "mysql" and self.server is not None and self.server.skip_locked:
            return "skip_locked"
        if self.dialect == "mysql":
            return "update_limit"
        return "default_sql"

    def _check_strategy(self, server: ServerInfo) -> None:
        wanted = self.config.reserve_sql
        fits = {
            "update_returning": server.dialect == "postgresql",
            "update_limit": server.dialect == "mysql",
            "skip_locked": server.skip_locked,
        }.get(wanted, True)
        if not fits:
            raise ConfigError(f"reserve_sql {wanted!r} does not work on {server.dialect} "
                              f"{server.version}; leave it at 'auto'")

    def _server_info(self, conn: Connection) -> ServerInfo:
        if self.dialect == "sqlite":
            version = conn.execute(text("select sqlite_version()")).scalar_one()
            return ServerInfo("sqlite", str(version), skip_locked=False)
        if self.dialect == "postgresql":
            version = conn.execute(text("show server_version")).scalar_one()
            return ServerInfo("postgresql", str(version), skip_locked=True)
        version = str(conn.execute(text("select version()")).scalar_one())
        return ServerInfo("mysql", version, skip_locked=mysql_has_skip_locked(version))

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()
        self.engine.dispose()
        if self.tx_engine is not self.engine:
            self.tx_engine.dispose()

    # -- statements ------------------------------------------------------------------------

    def _build_statements(self) -> None:
        t = self.table
        cfg = self.config
        # A lock older than max_run_time is abandoned for everyone (Ruby's horizon). A lock
        # held by a lease-renewing worker (ours: it refreshes locked_at every heartbeat) is
        # abandoned sooner, after lock_timeout; Ruby's locks never renew, so they keep the
        # full horizon and no live Ruby job is ever taken early.
        stale = "locked_at < :stale"
        if self.uses_leases:
            stale += " OR (locked_at < :lease_stale AND locked_by LIKE :lease_owner ESCAPE '!')"
        ready = [
            f"((run_at <= :now AND (locked_at IS NULL OR {stale})) OR locked_by = :me)",
            "failed_at IS NULL",
        ]
        if cfg.queues:
            named = [q for q in cfg.queues if q is not None]
            # One bind per queue (the list is fixed per worker), so the statement needs no
            # per-call rendering and can run on the driver's cursor directly.
            parts = ["queue IN (" + ", ".join(f":queue_{i}" for i in range(len(named))) + ")"] if named else []
            if None in cfg.queues:
                parts.append("queue IS NULL")
            ready.append("(" + " OR ".join(parts) + ")")
        if cfg.min_priority is not None:
            ready.append("priority >= :min_priority")
        if cfg.max_priority is not None:
            ready.append("priority <= :max_priority")
        names = []
        for i, patterns in enumerate(self._name_filters):
            names.append(
                "(" + " AND ".join(f"handler LIKE :n{i}_{j} ESCAPE '!'" for j in range(len(patterns))) + ")"
            )
        ready.append("(" + (" OR ".join(names) or "1 = 0") + ")")
        where = " AND ".join(ready)
        order = "ORDER BY priority ASC, run_at ASC"
        lock = " FOR UPDATE SKIP LOCKED" if self.server and self.server.skip_locked else ""

        set_lock = f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me"
        self._plain = self._reserve_statements(where, order, lock)
        # The backlog mark (README "Behind a Ruby backlog"): resume the scan where the last
        # row we could run was found instead of re-reading every Ruby row ahead of it.
        keyset = "(priority > :mark_p OR (priority = :mark_p AND run_at >= :mark_r))"
        self._marked = self._reserve_statements(f"{where} AND {keyset}", order, lock)
        self._candidates = self._plain.candidates
        sub = f"SELECT id FROM {t} WHERE {where} {{excl}}{order} LIMIT 1 FOR UPDATE SKIP LOCKED"
        self._read_back = self._typed(
            f"SELECT {ROW_COLUMNS} FROM {t} WHERE locked_at = :locked_at AND locked_by = :me "
            "AND failed_at IS NULL ORDER BY id LIMIT 1", rows=True
        )
        # reserve_batch: the same statements for :n rows.
        self._update_returning_n = self._typed(
            f"{set_lock} WHERE id IN ({sub.replace('LIMIT 1', 'LIMIT :n').format(excl='')}) "
            f"RETURNING {ROW_COLUMNS}", rows=True
        )
        self._lock_n = self._typed(
            f"SELECT {ROW_COLUMNS} FROM {t} WHERE {where} {order} LIMIT :n{lock}", rows=True
        )
        self._update_limit_n = self._typed(f"{set_lock} WHERE {where} {order} LIMIT :n")
        self._read_back_all = self._typed(
            f"SELECT {ROW_COLUMNS} FROM {t} WHERE locked_at = :locked_at AND locked_by = :me "
            f"AND failed_at IS NULL {order}", rows=True
        )
        self._claim_ids = self._typed(
            f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN :ids"
        )
        self._delete_ids = self._typed(f"DELETE FROM {t} WHERE id IN :ids AND locked_by = :me")
        self._unclaim_ids = self._typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE id IN :ids AND locked_by = :me"
        )
        self._renew_all = self._typed(
            f"UPDATE {t} SET locked_at = :now WHERE locked_by = :me AND failed_at IS NULL"
        )
        # A row we locked but cannot run (a name-filter false positive): hand it straight back.
        self._unclaim = self._typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE id = :id AND locked_by = :me"
        )
        # Rails' default_sql reservation: lock one candidate only if it is still ready; the
        # attempts fence also rejects a row another worker ran and rescheduled meanwhile.
        self._claim_if_ready = self._typed(
            f"UPDATE {t} SET locked_at = :now, locked_by = :me "
            f"WHERE id = :id AND attempts = :attempts AND {where}"
        )
        self._claim_locked = self._typed(f"UPDATE {t} SET locked_at = :now, locked_by = :me WHERE id = :id")
        mine = "id = :id AND locked_by = :me"
        self._delete = self._typed(f"DELETE FROM {t} WHERE {mine}")
        self._reschedule = self._typed(
            f"UPDATE {t} SET attempts = :attempts, run_at = :run_at, last_error = :last_error, "
            f"locked_at = NULL, locked_by = NULL, updated_at = :now WHERE {mine}"
        )
        self._fail = self._typed(
            f"UPDATE {t} SET attempts = :attempts, failed_at = :now, last_error = :last_error, "
            f"locked_at = NULL, locked_by = NULL, updated_at = :now WHERE {mine}"
        )
        self._interrupt = self._typed(
            f"UPDATE {t} SET last_error = :last_error, locked_at = NULL, locked_by = NULL, "
            f"updated_at = :now WHERE {mine}"
        )
        self._renew = self._typed(f"UPDATE {t} SET locked_at = :now WHERE {mine}")
        self._release_all = self._typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE locked_by = :me"
        )
        self._owner = self._typed(f"SELECT locked_by FROM {t} WHERE id = :id")
        self._last_error = self._typed(f"SELECT last_error FROM {t} WHERE id = :id")
        self._get = self._typed(f"SELECT {ROW_COLUMNS} FROM {t} WHERE id = :id", rows=True)
        returning = " RETURNING id" if self.dialect == "postgresql" else ""
        self._insert = self._typed(
            f"INSERT INTO {t} (priority, attempts, handler, run_at, queue, created_at, updated_at) "
            f"VALUES (:priority, 0, :handler, :run_at, :queue, :now, :now){returning}"
        )

    def _reserve_statements(self, where: str, order: str, lock: str) -> _ReserveSQL:
        t = self.table
        set_lock = f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me"
        # Rails reads the row back by locked_by (a scan: locked_by has no index); id =
        # LAST_INSERT_ID(id) hands us the row's id in the UPDATE's reply, so we read by key.
        set_lock_id = f"{set_lock}, id = LAST_INSERT_ID(id)" if self.dialect == "mysql" else set_lock
        sub = f"SELECT id FROM {t} WHERE {where} {{excl}}{order} LIMIT 1 FOR UPDATE SKIP LOCKED"
        excl = "AND id NOT IN :excluded "
        return _ReserveSQL(
            candidates=self._typed(
                f"SELECT {ROW_COLUMNS} FROM {t} WHERE {where} {order} LIMIT :limit", rows=True),
            # SKIP LOCKED takes one row at a time: locking read_ahead rows would hide them from
            # every other worker (who would then sleep, or exit_on_complete) meanwhile.
            lock_next=self._typed(
                f"SELECT {ROW_COLUMNS} FROM {t} WHERE {where} {order} LIMIT 1{lock}", rows=True),
            lock_next_excluding=self._typed(
                f"SELECT {ROW_COLUMNS} FROM {t} WHERE {where} {excl}{order} LIMIT 1{lock}",
                rows=True),
            # Rails' optimized_sql on PostgreSQL, one round trip:
            # UPDATE … WHERE id IN (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING.
            update_returning=self._typed(
                f"{set_lock} WHERE id IN ({sub.format(excl='')}) RETURNING {ROW_COLUMNS}",
                rows=True),
            update_returning_excluding=self._typed(
                f"{set_lock} WHERE id IN ({sub.format(excl=excl)}) RETURNING {ROW_COLUMNS}",
                rows=True),
            # Rails' optimized_sql on MySQL: UPDATE … ORDER BY … LIMIT 1, then read it back.
            update_limit=self._typed(f"{set_lock_id} WHERE {where} {order} LIMIT 1"),
            update_limit_excluding=self._typed(
                f"{set_lock_id} WHERE {where} {excl}{order} LIMIT 1"),
        )

    def _typed(self, sql: str, *, rows: bool = False) -> TextClause:
        stmt = text(sql)
        binds: list[Any] = []
        for name in ("now", "stale", "lease_stale", "run_at", "locked_at", "mark_r"):
            if f":{name}" in sql:
                binds.append(bindparam(name, type_=DateTime()))
        if ":queues" in sql:
            binds.append(bindparam("queues", expanding=True, type_=String()))
        if ":ids" in sql:
            binds.append(bindparam("ids", expanding=True, type_=Integer()))
        if ":excluded" in sql:
            binds.append(bindparam("excluded", expanding=True, type_=Integer()))
        for key in ("handler", "last_error"):
            if f":{key}" in sql:
                binds.append(bindparam(key, type_=Text()))
        if binds:
            stmt = stmt.bindparams(*binds)
        if rows:
            return stmt.columns(  # type: ignore[return-value]
                id=Integer(),
                priority=Integer(),
                attempts=Integer(),
                handler=Text(),
                run_at=DateTime(),
                queue=String(),
                locked_at=DateTime(),
                locked_by=String(),
                failed_at=DateTime(),
            )
        return stmt

    def _ready_params(self, me: str, now: datetime) -> dict[str, Any]:
        cfg = self.config
        params: dict[str, Any] = {
            "now": self.ts(now),
            "stale": self.ts(now - timedelta(seconds=cfg.max_run_time)),
            "me": me,
        }
        if self.uses_leases:
            params["lease_stale"] = self.ts(now - timedelta(seconds=cfg.lock_timeout))
            params["lease_owner"] = like_literal(cfg.lease_owner_prefix) + "% host:% pid:%"
        if cfg.queues:
            for i, queue in enumerate(q for q in cfg.queues if q is not None):
                params[f"queue_{i}"] = queue
        if cfg.min_priority is not None:
            params["min_priority"] = cfg.min_priority
        if cfg.max_priority is not None:
            params["max_priority"] = cfg.max_priority
        for i, patterns in enumerate(self._name_filters):
            for j, pattern in enumerate(patterns):
                params[f"n{i}_{j}"] = pattern
        return params

    @property
    def uses_leases(self) -> bool:
        return self.config.lock_timeout < self.config.max_run_time

    def ts(self, value: datetime) -> datetime:
        """MySQL `datetime` keeps no fractions; drop them as ActiveRecord does before writing."""
        return value.replace(microsecond=0) if self.dialect == "mysql" else value

    # -- the protocol ----------------------------------------------------------------------

    def reserve(self, me: str, now: datetime, accept: Callable[[JobRow], bool]) -> JobRow | None:
        """Lock the first ready row that `accept` says we can run; None when there is none."""
        return self._retrying("reserve", lambda: self._reserve_once(me, now, accept))

    def _reserve_once(self, me: str, now: datetime, accept: Callable[[JobRow], bool]) -> JobRow | None:
        params = self._ready_params(me, now)
        params["locked_at"] = self.ts(now)
        mark = self._mark_now()
        if mark is not None:
            params["mark_p"], params["mark_r"] = mark
            row = self._reserve_with(self._marked, params, accept)
            if row is not None:
                self._advance_mark(row)
                return row
            # Nothing past the mark: rows before it may have become ready; look at them all.
            self._mark = None
        started = time.perf_counter()
        row = self._reserve_with(self._plain, params, accept)
        if row is not None and time.perf_counter() - started > MARK_MIN_SCAN:
            self._advance_mark(row, fresh=True)
        return row

    def _reserve_with(self, sql: _ReserveSQL, params: dict[str, Any],
                      accept: Callable[[JobRow], bool]) -> JobRow | None:
        if self.strategy == "update_returning":
            return self._reserve_lock_first(params, accept, sql.update_returning,
                                            sql.update_returning_excluding, read_back=False)
        if self.strategy == "update_limit":
            return self._reserve_lock_first(params, accept, sql.update_limit,
                                            sql.update_limit_excluding, read_back=True)
        if self.strategy == "skip_locked":
            return self._reserve_skip_locked(params, accept, sql)
        return self._reserve_default_sql(params, accept, sql)

    def _mark_now(self) -> tuple[int, datetime] | None:
        """The backlog mark, unless it is older than MARK_TTL (then rescan from the start)."""
        with self._mark_lock:
            if self._mark is None or time.monotonic() - self._mark_since > MARK_TTL:
                self._mark = None
            return self._mark

    def _advance_mark(self, row: JobRow, *, fresh: bool = False) -> None:
        """Every ready row before the one we just took was one we cannot run (or locked)."""
        if row.run_at is None:
            return
        key = (row.priority, row.run_at)
        with self._mark_lock:
            if fresh or self._mark is None:
                self._mark, self._mark_since = key, time.monotonic()
            elif key > self._mark:
                self._mark = key

    def _reserve_lock_first(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                            lock: TextClause, lock_excluding: TextClause, *,
                            read_back: bool) -> JobRow | None:
        """Lock one ready row in one statement, as Rails' optimized_sql does, then check it."""
        excluded: list[int] = []
        me, locked_at = params["me"], params["locked_at"]
        with self._connection() as conn:
            for _ in range(self.config.read_ahead):
                stmt = lock_excluding if excluded else lock
                p = dict(params, excluded=excluded) if excluded else params
                result = self._run(conn, stmt, p)
                if read_back:
                    if result.rowcount != 1:
                        return None
                    row = self._run(conn, self._get, {"id": result.lastrowid}).first()
                else:
                    row = result.first()
                if row is None:
                    return None
                job = _row(row)
                if accept(job):
                    return _locked(job, locked_at, me)
                self._run(conn, self._unclaim, {"id": job.id, "me": me})
                excluded.append(job.id)
        return None

    def _reserve_skip_locked(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: _ReserveSQL) -> JobRow | None:
        """SELECT … FOR UPDATE SKIP LOCKED, check the row, UPDATE it, in one short transaction."""
        excluded: list[int] = []
        me, locked_at = params["me"], params["locked_at"]
        with self._connection(tx=True) as conn, conn.begin():
            for _ in range(self.config.read_ahead):
                if excluded:
                    found = self._run(conn, sql.lock_next_excluding, dict(params, excluded=excluded))
                else:
                    found = self._run(conn, sql.lock_next, params)
                row = found.first()
                if row is None:
                    return None
                job = _row(row)
                if accept(job):
                    self._run(conn, self._claim_locked, {"id": job.id, "now": locked_at, "me": me})
                    return _locked(job, locked_at, me)
                excluded.append(job.id)
        return None

    def _reserve_default_sql(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: _ReserveSQL) -> JobRow | None:
        """Rails' default_sql: read candidates, lock one only if it is still ready."""
        locked_at = params["locked_at"]
        with self._connection() as conn:
            rows = self._run(conn, sql.candidates, dict(params, limit=self.config.read_ahead)).all()
            for row in rows:
                job = _row(row)
                if not accept(job):
                    continue
                claim = dict(params, id=job.id, attempts=job.attempts, now=locked_at)
                if self._run(conn, self._claim_if_ready, claim).rowcount == 1:
                    return _locked(job, locked_at, params["me"])
        return None

    def reserve_many(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                     limit: int) -> list[JobRow]:
        """Lock up to `limit` ready rows in one round trip (reserve_batch), in ready order."""
        return self._retrying("reserve", lambda: self._reserve_many_once(me, now, accept, limit))

    def _reserve_many_once(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                           limit: int) -> list[JobRow]:
        params = dict(self._ready_params(me, now), locked_at=self.ts(now), n=limit)
        locked_at = params["locked_at"]
        strategy = self.strategy
        if strategy == "default_sql":
            rows: list[JobRow] = []
            with self._connection() as conn:
                for row in self._run(conn, self._candidates, dict(params, limit=limit)).all():
                    job = _row(row)
                    claim = dict(params, id=job.id, attempts=job.attempts, now=locked_at)
                    if accept(job) and self._run(conn, self._claim_if_ready, claim).rowcount == 1:
                        rows.append(_locked(job, locked_at, me))
            return rows
        if strategy == "skip_locked":
            with self._connection(tx=True) as conn, conn.begin():
                found = [_row(r) for r in self._run(conn, self._lock_n, params).all()]
                mine = [job for job in found if accept(job)]
                if mine:
                    conn.execute(self._claim_ids, {"ids": [j.id for j in mine],
                                                   "locked_at": locked_at, "me": me})
            return [_locked(job, locked_at, me) for job in mine]
        with self._connection() as conn:
            if strategy == "update_returning":
                found = [_row(r) for r in self._run(conn, self._update_returning_n, params).all()]
            else:
                if self._run(conn, self._update_limit_n, params).rowcount == 0:
                    return []
                found = [_row(r) for r in self._run(conn, self._read_back_all,
                                                    {"locked_at": locked_at, "me": me}).all()]
            found.sort(key=lambda j: (j.priority, j.run_at or locked_at, j.id))
            mine = [job for job in found if accept(job)]
            others = [job.id for job in found if job not in mine]
            if others:
                conn.execute(self._unclaim_ids, {"ids": others, "me": me})
        return [_locked(job, locked_at, me) for job in mine]

    def delete_many(self, ids: list[int], me: str) -> int:
        def run() -> int:
            with self._connection() as conn:
                return int(conn.execute(self._delete_ids, {"ids": ids, "me": me}).rowcount)
        return self._retrying("delete_many", run)

    def unclaim_many(self, ids: list[int], me: str) -> int:
        def run() -> int:
            with self._connection() as conn:
                return int(conn.execute(self._unclaim_ids, {"ids": ids, "me": me}).rowcount)
        return self._retrying("unclaim", run)

    def renew_all(self, me: str, now: datetime) -> int:
        def run() -> int:
            with self._connection() as conn:
                return int(self._run(conn, self._renew_all, {"me": me, "now": self.ts(now)}).rowcount)
        return self._retrying("renew", run)

    def delete(self, job_id: int, me: str) -> bool:
        """Success: the row goes away (Delayed::Worker#run → job.destroy)."""
        return self._write("delete", self._delete, {"id": job_id, "me": me})

    def reschedule(self, job_id: int, me: str, *, attempts: int, run_at: datetime,
                   last_error: str, now: datetime) -> bool:
        return self._write("reschedule", self._reschedule, {
            "id": job_id, "me": me, "attempts": attempts, "run_at": self.ts(run_at),
            "last_error": self.clip(last_error), "now": self.ts(now),
        })

    def fail(self, job_id: int, me: str, *, attempts: int, last_error: str, now: datetime) -> bool:
        return self._write("fail", self._fail, {
            "id": job_id, "me": me, "attempts": attempts, "last_error": self.clip(last_error),
            "now": self.ts(now),
        })

    def interrupt(self, job_id: int, me: str, *, last_error: str, now: datetime) -> bool:
        """Unlock without spending an attempt (shutdown interrupted the job)."""
        return self._write("interrupt", self._interrupt, {
            "id": job_id, "me": me, "last_error": self.clip(last_error), "now": self.ts(now),
        })

    def renew(self, job_id: int, me: str, now: datetime) -> bool:
        return self._write("renew", self._renew, {"id": job_id, "me": me, "now": self.ts(now)})

    def release(self, me: str) -> int:
        """Delayed::Job.clear_locks!: unlock every row this worker name holds."""
        def run() -> int:
            with self._connection() as conn:
                return int(conn.execute(self._release_all, {"me": me}).rowcount)
        return self._retrying("release", run)

    def owner(self, job_id: int) -> tuple[bool, str | None]:
        """(row exists, its locked_by) — to say why a fenced write touched nothing."""
        def run() -> tuple[bool, str | None]:
            with self._connection() as conn:
                row = conn.execute(self._owner, {"id": job_id}).first()
                return (False, None) if row is None else (True, row[0])
        return self._retrying("owner", run)

    def get(self, job_id: int) -> JobRow | None:
        def run() -> JobRow | None:
            with self._connection() as conn:
                row = conn.execute(self._get, {"id": job_id}).first()
                return None if row is None else _row(row)
        return self._retrying("get", run)

    def last_error(self, job_id: int) -> str | None:
        def run() -> str | None:
            with self._connection() as conn:
                value = conn.execute(self._last_error, {"id": job_id}).scalar()
                return None if value is None else str(value)
        return self._retrying("last_error", run)

    def insert(self, handler: str, *, now: datetime, run_at: datetime | None = None,
               queue: str | None = None, priority: int = 0) -> int:
        """Delayed::Job.enqueue: a new row (run_at defaults to now, like set_default_run_at)."""
        params = {"handler": handler, "priority": priority, "queue": queue,
                  "run_at": self.ts(run_at or now), "now": self.ts(now)}
        def run() -> int:
            with self._connection() as conn:
                result = conn.execute(self._insert, params)
                if self.dialect == "postgresql":
                    return int(result.scalar_one())
                return int(result.lastrowid)
        return self._retrying("insert", run)

    def clip(self, value: str) -> str:
        """last_error truncated to what the column holds (MySQL TEXT: 65,535 bytes)."""
        data = value.encode("utf-8", "replace")
        if len(data) <= self.last_error_limit:
            return value
        return data[: self.last_error_limit].decode("utf-8", "ignore")

    # -- plumbing --------------------------------------------------------------------------

    def _write(self, op: str, stmt: TextClause, params: dict[str, Any]) -> bool:
        def run() -> bool:
            with self._connection() as conn:
                return bool(self._run(conn, stmt, params).rowcount == 1)
        return self._retrying(op, run)

    def _run(self, conn: Connection, stmt: TextClause, params: dict[str, Any]) -> Any:
        """Execute on the driver's cursor when the statement allows (the hot path: about a
        third of SQLAlchemy's per-statement cost), else through SQLAlchemy."""
        if self.dialect == "sqlite" or "excluded" in params or "ids" in params:
            return conn.execute(stmt, params)
        sql = self._raw.get(stmt)
        if sql is None:
            sql = self._raw[stmt] = str(stmt.compile(dialect=self.engine.dialect))
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, params)
            return _RawResult(cursor)
        except self._dbapi_error as exc:
            invalidated = self.engine.dialect.is_disconnect(exc, dbapi_conn, cursor)  # type: ignore[arg-type]
            if invalidated:
                conn.invalidate(exc)
            raise DBAPIError.instance(sql, params, exc, self._dbapi_error,
                                      connection_invalidated=invalidated,
                                      dialect=self.engine.dialect) from exc
        finally:
            cursor.close()

    @contextmanager
    def _connection(self, *, tx: bool = False) -> Iterator[Connection]:
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
            self._conns[key] = conn

    def _prune(self) -> None:
        """Close the kept connections of threads that have ended."""
        alive = {t.ident for t in threading.enumerate()}
        with self._conns_lock:
            dead = [k for k in self._conns if k[0] not in alive]
            conns = [self._conns.pop(k) for k in dead]
        for conn in conns:
            conn.close()

    def _retrying(self, op: str, fn: Callable[[], T]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("db.retrying", op=op, attempt=state.attempt_number,
                        error=_short(exc) if exc else None)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(self.retry_window),
            wait=wait_exponential(multiplier=0.05, max=5),
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


def mysql_has_skip_locked(version: str) -> bool:
    """SKIP LOCKED: MariaDB >= 10.6, MySQL >= 8.0.1."""
    numbers = [int(p) for p in version.split("-")[0].split(".")[:3] if p.isdigit()]
    while len(numbers) < 3:
        numbers.append(0)
    major, minor, patch = numbers
    if "mariadb" in version.lower():
        return (major, minor) >= (10, 6)
    return (major, minor, patch) >= (8, 0, 1)


def _engine(url: URL, config: Config, *, autocommit: bool) -> Engine:
    kwargs: dict[str, Any] = {"echo": config.sql_log, "pool_pre_ping": True}
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError("database_url for SQLite must name a file (sqlite:///jobs.db), "
                              "an in-memory database cannot be shared with other workers")
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        kwargs["pool_pre_ping"] = False
    else:
        kwargs["pool_size"] = config.concurrency + 2
        kwargs["max_overflow"] = config.concurrency + 2
        kwargs["pool_recycle"] = 3600
    if dialect in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    if dialect == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    if autocommit:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    elif dialect in ("mysql", "mariadb"):
        # READ COMMITTED: a SKIP LOCKED scan keeps no locks on rows it did not take, so it
        # never makes a Ruby worker's UPDATE … LIMIT 1 wait behind rows we skipped.
        kwargs["isolation_level"] = "READ COMMITTED"
    try:
        engine = create_engine(url, **kwargs)
    except (ImportError, ModuleNotFoundError) as exc:
        hint = " (pip install 'dj_consumer[postgres]')" if dialect == "postgresql" else ""
        raise ConfigError(f"the driver for {url.drivername} is not installed: {exc}{hint}") from None
    except (SQLAlchemyError, ValueError, TypeError) as exc:
        raise ConfigError(f"database_url {_safe(url)} is not usable: {exc}") from None
    if dialect in ("mysql", "mariadb") and autocommit:
        # READ COMMITTED for single statements too: Rails' UPDATE … ORDER BY … LIMIT 1 then
        # locks only the row it takes, not every row its scan passed (InnoDB semi-consistent read).
        @event.listens_for(engine, "connect")
        def _read_committed(dbapi_conn: Any, _: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")

    if dialect == "sqlite" and autocommit:
        # SQLite: driver-level autocommit, so each statement is its own transaction.
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA busy_timeout = 30000")
    return engine


class _RawResult:
    """The little of a Result that the store reads, from a driver cursor already executed."""

    __slots__ = ("_rows", "lastrowid", "rowcount")

    def __init__(self, cursor: Any) -> None:
        self.rowcount = cursor.rowcount
        self.lastrowid = getattr(cursor, "lastrowid", None)
        self._rows = cursor.fetchall() if cursor.description else []

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
    locked_at = property(lambda self: self[6])
    locked_by = property(lambda self: self[7])
    failed_at = property(lambda self: self[8])


def _row(row: Any) -> JobRow:
    handler = row.handler
    if isinstance(handler, bytes | bytearray | memoryview):
        handler = bytes(handler).decode("utf-8", "surrogateescape")
    return JobRow(
        id=int(row.id), priority=int(row.priority), attempts=int(row.attempts),
        handler=handler, run_at=row.run_at, queue=row.queue, locked_at=row.locked_at,
        locked_by=row.locked_by, failed_at=row.failed_at,
    )


def _locked(job: JobRow, locked_at: datetime, me: str) -> JobRow:
    return JobRow(id=job.id, priority=job.priority, attempts=job.attempts, handler=job.handler,
                  run_at=job.run_at, queue=job.queue, locked_at=locked_at, locked_by=me,
                  failed_at=None)


def _text_limit(dialect: str, column_type: Any) -> int:
    if dialect != "mysql":
        return 1 << 20
    name = type(column_type).__name__.upper()
    return {"TINYTEXT": 255, "TEXT": 65535, "MEDIUMTEXT": 16777215}.get(name, 1 << 20)


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


def like_literal(value: str) -> str:
    """`value` matched literally by LIKE … ESCAPE '!'."""
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def escape_like(patterns: Iterable[str]) -> tuple[str, ...]:
    """ruby_yaml.like_patterns escape with a backslash; we send ESCAPE '!' (same on all dialects)."""
    out = []
    for pattern in patterns:
        converted, i = [], 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "\\" and i + 1 < len(pattern):
                nxt = pattern[i + 1]
                converted.append("!" + nxt if nxt in "%_" else ("!!" if nxt == "!" else nxt))
                i += 2
                continue
            converted.append("!!" if ch == "!" else ch)
            i += 1
        out.append("".join(converted))
    return tuple(out)
