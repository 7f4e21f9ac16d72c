"""Rows in and out of delayed_jobs: the row protocol. Nothing here runs a job.

The statements (sql.py) follow delayed_job_active_record 4.1 (see the README, "Row
protocol"); each outcome write is fenced by `locked_by = me`, so a worker that lost its lock
never writes. Connections and retries live in db.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from dj_consumer.config import Config
from dj_consumer.db import (
    Connections,
    ServerInfo,
    _RowTuple,
    is_refusal,
    is_transient,
    mysql_has_skip_locked,
    safe_url,
    short_error,
    unreachable,
)
from dj_consumer.errors import ConfigError, EnqueueUnknown
from dj_consumer.models import JobRow
from dj_consumer.schema import REQUIRED_COLUMNS
from dj_consumer.sql import ReserveSQL, Statements

__all__ = ["ServerInfo", "Store", "is_transient", "mysql_has_skip_locked"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: How long the backlog mark is trusted before a reserve rescans from the first ready row. A
#: row that becomes ready *behind* the mark (an expired lock, a retry by hand, a new row with
#: a lower priority number) waits at most this long more. See the README.
MARK_TTL = 30.0
#: The mark is only used once a full reserve is slow (a backlog is there): with a small table,
#: every reserve looks at every ready row, and the order is exact.
MARK_MIN_SCAN = 0.005
#: After a row that began like one of ours turned out not to be (hand-written YAML), claim
#: nothing before parsing it for this long, so such a row is not locked on every reserve.
SURE_PAUSE = 300.0
#: default_sql reads read_ahead candidates per round; this many rounds at most per reserve.
MAX_SCAN_ROUNDS = 50


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
        self._sure_paused_until = 0.0
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
                        f"table {self.config.table_name!r} does not exist in {safe_url(self.config.url)}; "
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
            raise unreachable(self.config.url, exc) from None
        self._build_statements()
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
        if self.dialect == "mysql" and self.server is not None and self.server.skip_locked:
            return "skip_locked"
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
        self.db.close()

    def set_name_filters(self, name_filters: Sequence[Sequence[str]],
                         names: Sequence[str] = ()) -> None:
        """The LIKE prefilters of the names we can run, and the names themselves (whose sure
        beginnings, ruby_yaml.sure_prefixes, let a reserve claim before parsing); rebuilds
        the statements."""
        self._name_filters = [tuple(p) for p in name_filters]
        self._names = tuple(names)
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

    def ts(self, value: datetime) -> datetime:
        """MySQL `datetime` keeps no fractions; drop them as ActiveRecord does before writing."""
        return value.replace(microsecond=0) if self.dialect == "mysql" else value

    # -- the protocol ----------------------------------------------------------------------

    def reserve(self, me: str, now: datetime, accept: Callable[[JobRow], bool]) -> JobRow | None:
        """Lock the first ready row that `accept` says we can run; None when there is none."""
        return self.reserve_after(me, now, accept)[0]

    @property
    def folds_deletes(self) -> bool:
        """Does reserve_after save a commit by deleting the previous success in its transaction?"""
        return self.strategy == "skip_locked" or (
            self.strategy == "default_sql" and self.dialect == "postgresql")

    def reserve_after(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                      finished: int | None = None, *,
                      on_deleted: Callable[[bool], None] | None = None) -> tuple[JobRow | None, bool]:
        """Delete `finished` (a success of ours) and reserve the next row, in one commit where
        the strategy allows; (the row or None, whether `finished` was still ours to delete).

        `on_deleted` may hear that answer early, while the server commits (the one-round-trip
        MySQL reserve): a commit that then fails is retried, so it may hear it again."""
        def once() -> tuple[JobRow | None, bool]:
            done = _Done(finished, on_deleted)
            row = self._reserve_once(me, now, accept, done)
            if done.id is not None and done.deleted is None:
                done.deleted = self.delete(done.id, me)
            return row, bool(done.deleted)
        return self.db.retrying("reserve", once)

    def _reserve_once(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                      done: _Done) -> JobRow | None:
        params = self.sql.ready_params(me, now, self.ts)
        params["locked_at"] = self.ts(now)
        mark = self._mark_now()
        if mark is not None:
            params["mark_p"], params["mark_r"] = mark
            row = self._reserve_with(self.sql.marked, params, accept, done)
            if row is not None:
                self._advance_mark(row)
                return row
            # Nothing past the mark: rows before it may have become ready; look at them all.
            self._mark = None
        started = time.perf_counter()
        row = self._reserve_with(self.sql.plain, params, accept, done)
        if row is not None and time.perf_counter() - started > MARK_MIN_SCAN:
            self._advance_mark(row, fresh=True)
        return row

    def _reserve_with(self, sql: ReserveSQL, params: dict[str, Any],
                      accept: Callable[[JobRow], bool], done: _Done) -> JobRow | None:
        strategy = self.strategy
        if strategy == "update_returning" and done.id is not None and done.deleted is None:
            with self.db.connection() as conn:
                first = self.db.run(conn, sql.update_returning_after,
                                    dict(params, done_id=done.id)).first()
            done.deleted = bool(first[0])
            if first[1] is None:
                return None
            job = _row(_RowTuple(first[1:]))
            if accept(job):
                return _locked(job, params["locked_at"], params["me"])
            self.unclaim_many([job.id], params["me"])
            params = dict(params, excluded=[job.id])
        if strategy == "update_returning":
            return self._reserve_lock_first(params, accept, sql.update_returning,
                                            sql.update_returning_excluding, read_back=False)
        if strategy == "update_limit":
            return self._reserve_lock_first(params, accept, sql.update_limit,
                                            sql.update_limit_excluding, read_back=True)
        if strategy == "skip_locked" and self.db.scripts and "excluded" not in params:
            return self._reserve_skip_locked_scripted(params, accept, sql, done)
        if strategy == "skip_locked":
            return self._reserve_skip_locked(params, accept, sql, done)
        return self._reserve_default_sql(params, accept, sql, done)

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
        excluded: list[int] = list(params.pop("excluded", []))
        me, locked_at = params["me"], params["locked_at"]
        with self.db.connection() as conn:
            for _ in range(MAX_SCAN_ROUNDS * self.config.read_ahead):
                stmt = lock_excluding if excluded else lock
                p = dict(params, excluded=excluded) if excluded else params
                result = self.db.run(conn, stmt, p)
                if read_back:
                    if result.rowcount != 1:
                        return None
                    row = self.db.run(conn, self.sql.get, {"id": result.lastrowid}).first()
                else:
                    row = result.first()
                if row is None:
                    return None
                job = _row(row)
                if accept(job):
                    return _locked(job, locked_at, me)
                self.db.run(conn, self.sql.unclaim, {"id": job.id, "me": me})
                excluded.append(job.id)
        return None

    def _reserve_skip_locked(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: ReserveSQL, done: _Done) -> JobRow | None:
        """SELECT … FOR UPDATE SKIP LOCKED, check the row, UPDATE it, in one short transaction
        (which also deletes the previous success: one commit per job, not two)."""
        excluded: list[int] = list(params.pop("excluded", []))
        me, locked_at = params["me"], params["locked_at"]
        with self.db.connection(tx=True) as conn, conn.begin():
            if done.id is not None and done.deleted is None:
                done.deleted = self.db.run(conn, self.sql.delete, {"id": done.id, "me": me}).rowcount == 1
            for _ in range(MAX_SCAN_ROUNDS * self.config.read_ahead):
                if excluded:
                    found = self.db.run(conn, sql.lock_next_excluding, dict(params, excluded=excluded))
                else:
                    found = self.db.run(conn, sql.lock_next, params)
                row = found.first()
                if row is None:
                    return None
                job = _row(row)
                if accept(job):
                    self.db.run(conn, self.sql.claim_locked, {"id": job.id, "now": locked_at, "me": me})
                    return _locked(job, locked_at, me)
                excluded.append(job.id)
        return None

    def _reserve_skip_locked_scripted(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                                      sql: ReserveSQL, done: _Done) -> JobRow | None:
        """_reserve_skip_locked in one round trip: START TRANSACTION; DELETE the previous
        success (if any); SELECT the next ready row … FOR UPDATE SKIP LOCKED into session
        variables; UPDATE it if its handler starts the way Psych writes one of our names;
        return it; COMMIT. On MariaDB they travel as one compound statement
        (Connections.run_script).

        A row the script did not claim (a `.delay` job, a look-alike) is checked by `accept`
        first and then claimed only if it is still ready; one it did claim is re-checked and,
        if not ours after all (hand-written YAML), handed straight back."""
        me, locked_at = params["me"], params["locked_at"]
        s = self.sql
        script = [s.start_transaction, s.delete, s.count_deleted, sql.select_next_into,
                  s.claim_selected, s.read_selected, s.commit]
        deleting = done.id if done.deleted is None else None  # `id = NULL` deletes nothing
        # The script's one row, (deleted, claimed, *RESERVE_COLUMNS), as a job, and whether
        # accept wants it: filled in by check() while the server commits.
        got: dict[str, Any] = {}

        def check(result: Any) -> None:
            out = got["out"] = result.first()
            if deleting is not None and done.report is not None and out[0] == 1:
                done.report(True)  # (job.lock_lost asks the database: not from in here)
            job = got["job"] = None if out[2] is None else _row(_RowTuple(out[2:]))
            got["ours"] = job is not None and accept(job)

        with self.db.connection() as conn:
            claim_sure = int(time.monotonic() >= self._sure_paused_until)
            try:
                self.db.run_script(conn, script, dict(params, id=deleting, claim_sure=claim_sure),
                                   s.constants, block=bool(self.server and self.server.mariadb),
                                   on_rows=check)
            except SQLAlchemyError:
                raise  # the script did not commit: nothing of it is left behind
            except Exception:
                # check() failed (a parser bug, say) while the server claimed and committed
                # the row: hand it back, or it stays locked by us.
                if got.get("job") is not None and got["out"][1] == 1:
                    self.db.run(conn, self.sql.unclaim, {"id": got["job"].id, "me": me})
                raise
            out, job = got["out"], got["job"]
            if deleting is not None:
                done.deleted = out[0] == 1
            if job is None:
                return None
            claimed = out[1] == 1
            if got["ours"]:
                if claimed or self.db.run(conn, self.sql.claim_if_ready, dict(
                        params, id=job.id, attempts=job.attempts, now=locked_at)).rowcount == 1:
                    return _locked(job, locked_at, me)
            elif claimed:
                self.db.run(conn, self.sql.unclaim, {"id": job.id, "me": me})
                self._sure_paused_until = time.monotonic() + SURE_PAUSE
                log.warning("reserve.not_ours_after_all", job_id=job.id, pause_s=SURE_PAUSE,
                            hint="its handler begins like Psych's dump of a job of ours but is "
                                 "not one (hand-written?); handed back at once. Rows are now "
                                 "parsed before they are claimed for a while")
        return self._reserve_skip_locked(dict(params, excluded=[job.id]), accept, sql, done)

    def _reserve_default_sql(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: ReserveSQL, done: _Done) -> JobRow | None:
        """Rails' default_sql: read candidates, lock one only if it is still ready (and still at
        the attempts we read). Rows lost to other workers, or not ours, are skipped and the
        scan goes on past them: None means nothing ready is left, not "we lost the races"."""
        locked_at, me = params["locked_at"], params["me"]
        excluded: list[int] = list(params.pop("excluded", []))
        fold = self.dialect == "postgresql" and done.id is not None and done.deleted is None
        with self.db.connection() as conn:
            for _ in range(MAX_SCAN_ROUNDS):
                query = dict(params, limit=self.config.read_ahead)
                if excluded:
                    query["excluded"] = excluded
                rows = self.db.run(conn, sql.candidates_excluding if excluded else sql.candidates,
                                   query).all()
                if not rows:
                    return None
                for row in rows:
                    job = _row(row)
                    excluded.append(job.id)
                    if job.id == done.id or not accept(job):
                        continue  # the success being deleted is still "ours" in this snapshot
                    claim = dict(params, id=job.id, attempts=job.attempts, now=locked_at)
                    if fold:
                        result = self.db.run(conn, self.sql.claim_if_ready_after,
                                             dict(claim, done_id=done.id)).first()
                        done.deleted, fold = bool(result[0]), False
                        claimed = bool(result[1])
                    else:
                        claimed = self.db.run(conn, self.sql.claim_if_ready, claim).rowcount == 1
                    if claimed:
                        return _locked(job, locked_at, me)
        return None

    def reserve_many(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                     limit: int) -> list[JobRow]:
        """Lock up to `limit` ready rows in one round trip (reserve_batch), in ready order."""
        return self.db.retrying("reserve", lambda: self._reserve_many_once(me, now, accept, limit))

    def _reserve_many_once(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                           limit: int) -> list[JobRow]:
        params = dict(self.sql.ready_params(me, now, self.ts), locked_at=self.ts(now), n=limit)
        locked_at = params["locked_at"]
        strategy = self.strategy
        if strategy == "default_sql" and self.dialect == "postgresql":
            # Check the names first, then claim every one still ready in one statement.
            with self.db.connection() as conn:
                found = [_row(r) for r in self.db.run(conn, self.sql.candidates,
                                                      dict(params, limit=limit)).all()]
                ours = [job for job in found if accept(job)]
                if not ours:
                    return []
                claimed = {r[0] for r in self.db.run(conn, self.sql.claim_ids_if_ready,
                                                     dict(params, ids=[j.id for j in ours])).all()}
            return [_locked(job, locked_at, me) for job in ours if job.id in claimed]
        if strategy == "default_sql":
            rows: list[JobRow] = []
            with self.db.connection() as conn:
                for row in self.db.run(conn, self.sql.candidates, dict(params, limit=limit)).all():
                    job = _row(row)
                    claim = dict(params, id=job.id, attempts=job.attempts, now=locked_at)
                    if accept(job) and self.db.run(conn, self.sql.claim_if_ready, claim).rowcount == 1:
                        rows.append(_locked(job, locked_at, me))
            return rows
        if strategy == "skip_locked":
            with self.db.connection(tx=True) as conn, conn.begin():
                found = [_row(r) for r in self.db.run(conn, self.sql.lock_n, params).all()]
                mine = [job for job in found if accept(job)]
                if mine:
                    self.db.run(conn, self.sql.claim_ids, {"ids": [j.id for j in mine],
                                                   "locked_at": locked_at, "me": me})
            return [_locked(job, locked_at, me) for job in mine]
        with self.db.connection() as conn:
            if strategy == "update_returning":
                found = [_row(r) for r in self.db.run(conn, self.sql.update_returning_n, params).all()]
            else:
                if self.db.run(conn, self.sql.update_limit_n, params).rowcount == 0:
                    return []
                found = [_row(r) for r in self.db.run(conn, self.sql.read_back_all,
                                                    {"locked_at": locked_at, "me": me}).all()]
            found.sort(key=lambda j: (j.priority, j.run_at or locked_at, j.id))
            mine = [job for job in found if accept(job)]
            others = [job.id for job in found if job not in mine]
            if others:
                self.db.run(conn, self.sql.unclaim_ids, {"ids": others, "me": me})
        return [_locked(job, locked_at, me) for job in mine]

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
        return None if row is None else _row(row)

    def last_error(self, job_id: int) -> str | None:
        value = self._retried("last_error", lambda conn: conn.execute(
            self.sql.last_error, {"id": job_id}).scalar())
        return None if value is None else str(value)

    def insert(self, handler: str, *, now: datetime, run_at: datetime | None = None,
               queue: str | None = None, priority: int = 0) -> int:
        """Delayed::Job.enqueue: a new row (run_at defaults to now, like set_default_run_at),
        written at most once. A fault before the COMMIT was sent leaves nothing behind and is
        retried; a connection lost while committing is settled by asking the database, never
        by inserting again on a guess (EnqueueUnknown when it cannot say)."""
        params = {"handler": handler, "priority": priority, "queue": queue,
                  "run_at": self.ts(run_at or now), "now": self.ts(now)}
        while True:
            try:
                return self.db.retrying("insert", lambda: self._insert_once(params))
            except _CommitLost as lost:
                committed = self._committed(lost)
                if committed:
                    return lost.job_id
                if committed is None:
                    raise EnqueueUnknown(
                        f"the connection was lost while committing job {lost.job_id} "
                        f"({short_error(lost.error)}) and the database cannot say whether it "
                        "committed; it was not inserted again") from None
                log.warning("db.retrying", op="insert", error=short_error(lost.error),
                            hint="the lost COMMIT did not commit; inserting again")

    def _insert_once(self, params: dict[str, Any]) -> int:
        with self.db.connection(tx=True) as conn:
            trans = conn.begin()
            result = conn.execute(self.sql.insert, params)
            if self.dialect == "postgresql":
                job_id, marker = result.one()
            else:
                job_id, marker = result.lastrowid, None
            try:
                trans.commit()
            except SQLAlchemyError as exc:
                if self.dialect == "sqlite" or not is_transient(exc):
                    raise  # SQLite's failed COMMIT did not commit; a refusal is no lost reply
                raise _CommitLost(int(job_id), marker, exc) from exc
        return int(job_id)

    def _committed(self, lost: _CommitLost) -> bool | None:
        """Did the transaction whose COMMIT reply was lost commit? None: cannot tell."""
        for _ in range(20):
            try:
                if lost.marker is not None:
                    status = self._retried("insert_check", lambda conn: conn.execute(
                        self.sql.insert_status, {"xid": lost.marker}).scalar())
                    if status in ("committed", "aborted"):
                        return bool(status == "committed")
                    if status is None:
                        return None
                    time.sleep(0.5)  # in progress: the server has not seen the socket close
                    continue
                with self.db.connection(tx=True) as conn, conn.begin():
                    found = conn.execute(self.sql.insert_check, {"id": lost.job_id}).first()
                # MySQL: no row may also mean that it committed and a worker already ran it.
                return True if found is not None else None
            except SQLAlchemyError:
                return None
        return None

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


class _CommitLost(Exception):
    """The reply to an INSERT's COMMIT was lost: it may or may not have committed."""

    def __init__(self, job_id: int, marker: Any, error: SQLAlchemyError) -> None:
        super().__init__(f"COMMIT of job {job_id} lost")
        self.job_id, self.marker, self.error = job_id, marker, error


class _Done:
    """The previous success to delete with the next reserve, and whether that happened."""

    __slots__ = ("deleted", "id", "report")

    def __init__(self, job_id: int | None, report: Callable[[bool], None] | None = None) -> None:
        self.id = job_id
        self.deleted: bool | None = None
        self.report = report


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


def _row(row: Any) -> JobRow:
    handler = row.handler
    if isinstance(handler, bytes | bytearray | memoryview):
        handler = bytes(handler).decode("utf-8", "surrogateescape")
    return JobRow(
        id=int(row.id), priority=int(row.priority), attempts=int(row.attempts),
        handler=handler, run_at=row.run_at, queue=row.queue,
        locked_at=getattr(row, "locked_at", None), locked_by=getattr(row, "locked_by", None),
        failed_at=getattr(row, "failed_at", None),
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


