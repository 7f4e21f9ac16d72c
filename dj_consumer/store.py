"""Rows in and out of delayed_jobs: the row protocol. Nothing here runs a job.

The statements (sql.py) follow delayed_job_active_record 4.1 (see the README, "Row
protocol"); each outcome write is fenced by `locked_by = me`, so a worker that lost its lock
never writes. Connections and retries live in db.py.
"""

from __future__ import annotations

import enum
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

from dj_consumer.config import LEASE_RENEW_MAX, Config
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
from dj_consumer.rejected import Rejected
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
#: After a row claimed before it was parsed turned out not to be ours (a row that began like
#: one of ours but was hand-written YAML; any look-alike under a lock-first strategy), claim
#: nothing before parsing it for this long, so such a row is not locked on every reserve.
SURE_PAUSE = 300.0
#: The scan past rows a reserve could not take reads pages of read_ahead rows, doubling up
#: to this many.
SCAN_PAGE_MAX = 500
#: Rails' optimized_sql strategies: they lock a row before they can read its name.
LOCK_FIRST = ("update_returning", "update_limit")


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
        self._rejected = Rejected()
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
                self._warn_if_short_lease()
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

    def _warn_if_short_lease(self) -> None:
        cfg = self.config
        if cfg.uses_leases and cfg.lock_timeout < 2 * LEASE_RENEW_MAX:
            log.warning("lease.short_lock_timeout", lock_timeout=cfg.lock_timeout,
                        lease_worker_ids=list(cfg.lease_ids),
                        hint=f"a peer of these worker_ids that renews less often than every "
                             f"{cfg.lock_timeout:g}s (other deployments renew every "
                             f"{LEASE_RENEW_MAX:g}s at most) would lose live jobs to this worker; "
                             "give every one of them the same lock_timeout, or this worker a "
                             "worker_id of its own")

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

        None means no ready row of ours is left: a reserve reads past every row it cannot
        take (not ours, or taken by another worker first) until it finds one or the ready
        rows end (Store._scan).

        `on_deleted` may hear that answer early, while the server commits (the one-round-trip
        MySQL reserve): a commit that then fails is retried, so it may hear it again."""
        accept = self._rejected.wrap(accept)

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
            params["mark_p"], params["mark_run_at"] = mark[0], self.sql.earlier(mark[1])
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
        """The strategy's own statements first (the hot path); when they leave it open (the
        row they found was not ours, or another worker took it first), the scan goes on."""
        strategy = self._strategy_now()
        found: JobRow | _Scan | None
        if strategy in LOCK_FIRST:
            found = self._reserve_lock_first(params, accept, sql, done)
        elif strategy == "skip_locked" and self.db.scripts:
            found = self._reserve_skip_locked_scripted(params, accept, sql, done)
        elif strategy == "skip_locked":
            found = self._reserve_skip_locked(params, accept, sql, done)
        else:
            found = self._reserve_default_sql(params, accept, sql, done)
        return self._scan(params, accept, sql, done) if found is SCAN else found

    def _strategy_now(self) -> str:
        """The strategy, except that one which locks before it parses parses first (as
        default_sql) while claims before parsing are paused (_pause_claims)."""
        strategy = self.strategy
        if strategy in LOCK_FIRST and time.monotonic() < self._sure_paused_until:
            return "default_sql"
        return strategy

    def _pause_claims(self, job_id: int, event: str, hint: str) -> None:
        """A row claimed before it was parsed was not ours (handed back already): parse every
        row before claiming it for SURE_PAUSE, so such a row is not locked on every reserve."""
        self._sure_paused_until = time.monotonic() + SURE_PAUSE
        log.warning(event, job_id=job_id, pause_s=SURE_PAUSE, hint=hint)

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

    def _scan(self, params: dict[str, Any], accept: Callable[[JobRow], bool], sql: ReserveSQL,
              done: _Done) -> JobRow | None:
        """Past the rows a reserve could not take: the ready rows in (priority, run_at, id)
        order, each page starting after the last row of the one before, until one of ours is
        claimed (still ready, same attempts) or the rows end. Plain reads: no row is locked
        while another is parsed, and none waits on a lock. A row turned down before (Rejected)
        or tried already in this reserve costs no parse."""
        limit, key = self.config.read_ahead, dict[str, Any]()
        with self.db.connection() as conn:
            while True:
                page = self.db.run(conn, sql.scan_after if key else sql.scan,
                                   dict(params, limit=limit, **key)).all()
                for row in page:
                    job = _row(row)
                    if self._try_claim(conn, params, job, accept, done):
                        return _locked(job, params["locked_at"], params["me"])
                if len(page) < limit or page[-1].run_at is None:
                    return None
                key, limit = self.sql.keyset(page[-1]), min(2 * limit, SCAN_PAGE_MAX)

    def _try_claim(self, conn: Connection, params: dict[str, Any], job: JobRow,
                   accept: Callable[[JobRow], bool], done: _Done) -> bool:
        """Rails' default_sql claim of a row read without a lock: if it is ours, take it only
        if it is still ready and at the attempts we read (so a row another worker ran and
        rescheduled meanwhile is not run with the old count). On PostgreSQL the previous
        success's DELETE travels in the same statement."""
        if job.id == done.id or job.id in done.tried or not accept(job):
            return False  # (the success being deleted is still "ours" in this snapshot)
        done.tried.add(job.id)
        claim = dict(params, id=job.id, attempts=job.attempts, now=params["locked_at"])
        if self.dialect == "postgresql" and done.id is not None and done.deleted is None:
            result = self.db.run(conn, self.sql.claim_if_ready_after,
                                 dict(claim, done_id=done.id)).first()
            done.deleted = bool(result[0])
            return bool(result[1])
        return bool(self.db.run(conn, self.sql.claim_if_ready, claim).rowcount == 1)

    def _reserve_lock_first(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                            sql: ReserveSQL, done: _Done) -> JobRow | _Scan | None:
        """Rails' optimized_sql: lock one ready row in one statement, then check it. A row
        that is not ours is handed back at once, and claims wait for parsing for a while."""
        me, locked_at = params["me"], params["locked_at"]
        with self.db.connection() as conn:
            if self.strategy == "update_limit":
                result = self.db.run(conn, sql.update_limit, params)
                row = None if result.rowcount != 1 else self.db.run(
                    conn, self.sql.get, {"id": result.lastrowid}).first()
            elif done.id is not None and done.deleted is None:
                first = self.db.run(conn, sql.update_returning_after,
                                    dict(params, done_id=done.id)).first()
                done.deleted = bool(first[0])
                row = None if first[1] is None else _RowTuple(first[1:])
            else:
                row = self.db.run(conn, sql.update_returning, params).first()
            if row is None:
                return None
            job = _row(row)
            if accept(job):
                return _locked(job, locked_at, me)
            self.db.run(conn, self.sql.unclaim, {"id": job.id, "me": me})
        self._lookalike_locked(job.id)
        return SCAN

    def _lookalike_locked(self, job_id: int) -> None:
        self._pause_claims(job_id, "reserve.lookalike_locked",
                           f"reserve_sql {self.strategy!r} locks a row before it can read its "
                           "name; this one was not ours and was handed back at once. Rows are "
                           "now parsed before they are claimed for a while ('auto' always does)")

    def _reserve_skip_locked(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: ReserveSQL, done: _Done) -> JobRow | _Scan | None:
        """SELECT … FOR UPDATE SKIP LOCKED, check the row, UPDATE it, in one short transaction
        (which also deletes the previous success: one commit per job, not two). A row that is
        not ours is let go at once (commit) and the scan goes on without locks."""
        me, locked_at = params["me"], params["locked_at"]
        with self.db.connection(tx=True) as conn, conn.begin():
            if done.id is not None and done.deleted is None:
                done.deleted = self.db.run(conn, self.sql.delete, {"id": done.id, "me": me}).rowcount == 1
            row = self.db.run(conn, sql.lock_next, params).first()
            if row is None:
                return None
            job = _row(row)
            if accept(job):
                self.db.run(conn, self.sql.claim_locked, {"id": job.id, "now": locked_at, "me": me})
                return _locked(job, locked_at, me)
        return SCAN

    def _reserve_skip_locked_scripted(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                                      sql: ReserveSQL, done: _Done) -> JobRow | _Scan | None:
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
            if got["ours"] and not claimed:
                done.tried.add(job.id)
                claimed = self.db.run(conn, self.sql.claim_if_ready, dict(
                    params, id=job.id, attempts=job.attempts, now=locked_at)).rowcount == 1
            if got["ours"] and claimed:
                return _locked(job, locked_at, me)
            if claimed:
                self.db.run(conn, self.sql.unclaim, {"id": job.id, "me": me})
                self._not_ours_after_all(job.id)
        return SCAN

    def _not_ours_after_all(self, job_id: int) -> None:
        self._pause_claims(job_id, "reserve.not_ours_after_all",
                           "its handler begins like Psych's dump of a job of ours but is not one "
                           "(hand-written?); handed back at once. Rows are now parsed before "
                           "they are claimed for a while")

    def _reserve_default_sql(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                             sql: ReserveSQL, done: _Done) -> JobRow | _Scan | None:
        """Rails' default_sql: read read_ahead candidates, lock one only if it is still ready
        (and still at the attempts we read). None only when they were all the ready rows."""
        limit = self.config.read_ahead
        with self.db.connection() as conn:
            rows = self.db.run(conn, sql.candidates, dict(params, limit=limit)).all()
            for row in rows:
                job = _row(row)
                if self._try_claim(conn, params, job, accept, done):
                    return _locked(job, params["locked_at"], params["me"])
        return None if len(rows) < limit else SCAN

    def reserve_many(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                     limit: int) -> list[JobRow]:
        """Lock up to `limit` ready rows (reserve_batch), in ready order; [] only when no
        ready row of ours is left (the scan goes on past rows it cannot take)."""
        accept = self._rejected.wrap(accept)
        return self.db.retrying("reserve", lambda: self._reserve_many_once(me, now, accept, limit))

    def _reserve_many_once(self, me: str, now: datetime, accept: Callable[[JobRow], bool],
                           limit: int) -> list[JobRow]:
        params = dict(self.sql.ready_params(me, now, self.ts), locked_at=self.ts(now), n=limit)
        strategy = self._strategy_now()
        if strategy in LOCK_FIRST:
            mine, full = self._lock_many_first(params, accept)
        elif strategy == "skip_locked":
            mine, full = self._skip_locked_many(params, accept)
        else:
            with self.db.connection() as conn:
                page = [_row(r) for r in self.db.run(conn, self.sql.candidates,
                                                     dict(params, limit=limit)).all()]
                mine, full = self._claim_many(conn, params, [j for j in page if accept(j)]), \
                    len(page) == limit
        if mine or not full:
            return mine
        return self._scan_many(params, accept, limit)

    def _scan_many(self, params: dict[str, Any], accept: Callable[[JobRow], bool],
                   limit: int) -> list[JobRow]:
        """_scan for a batch: page on until a page holds rows of ours still ready."""
        size, key = max(limit, self.config.read_ahead), dict[str, Any]()
        with self.db.connection() as conn:
            while True:
                page = [_row(r) for r in self.db.run(
                    conn, self.sql.plain.scan_after if key else self.sql.plain.scan,
                    dict(params, limit=size, **key)).all()]
                ours: list[JobRow] = []
                for job in page:
                    if len(ours) == limit:
                        break
                    last = job
                    if accept(job):
                        ours.append(job)
                mine = self._claim_many(conn, params, ours)
                if mine:
                    return mine
                if len(page) < size or last.run_at is None:
                    return []
                key, size = self.sql.keyset(last), min(2 * size, SCAN_PAGE_MAX)

    def _claim_many(self, conn: Connection, params: dict[str, Any],
                    jobs: list[JobRow]) -> list[JobRow]:
        """Claim `jobs` (ours, read without a lock) in one statement, each only if still ready
        and at the attempts read; the ones claimed, in order."""
        if not jobs:
            return []
        binds = dict(params)
        for k, job in enumerate(jobs):
            binds[f"i{k}"], binds[f"a{k}"] = job.id, job.attempts
        result = self.db.run(conn, self.sql.claim_pairs(len(jobs)), binds)
        if self.dialect == "postgresql":
            claimed = {r[0] for r in result.all()}
        elif result.rowcount == len(jobs):
            claimed = {j.id for j in jobs}
        else:  # lost some to other workers: which?
            claimed = {r[0] for r in self.db.run(conn, self.sql.claimed_ids, {
                "ids": [j.id for j in jobs], "me": params["me"],
                "locked_at": params["locked_at"]}).all()}
        return [_locked(j, params["locked_at"], params["me"]) for j in jobs if j.id in claimed]

    def _skip_locked_many(self, params: dict[str, Any],
                          accept: Callable[[JobRow], bool]) -> tuple[list[JobRow], bool]:
        """SELECT n rows … FOR UPDATE SKIP LOCKED and claim the surely-ours ones in one short
        transaction; parse every row after it ended (no lock held), hand back a sure row that
        was not ours after all, and claim the other rows of ours if still ready."""
        me, locked_at = params["me"], params["locked_at"]
        claim_sure = int(time.monotonic() >= self._sure_paused_until)
        with self.db.connection(tx=True) as conn, conn.begin():
            found = self.db.run(conn, self.sql.lock_n, dict(params, claim_sure=claim_sure)).all()
            sure = {int(r[0]) for r in found if r[6]}
            if sure:
                self.db.run(conn, self.sql.claim_ids, {"ids": sorted(sure), "locked_at": locked_at,
                                                       "me": me})
        jobs = [_row(_RowTuple(r[:6])) for r in found]
        with self.db.connection() as conn:
            try:
                verdicts = [accept(job) for job in jobs]
            except Exception:  # a parser bug: the sure rows must not stay locked by us
                if sure:
                    self.db.run(conn, self.sql.unclaim_ids, {"ids": sorted(sure), "me": me})
                raise
            lookalikes = [j.id for j, ok in zip(jobs, verdicts, strict=True) if j.id in sure and not ok]
            if lookalikes:
                self.db.run(conn, self.sql.unclaim_ids, {"ids": lookalikes, "me": me})
                self._not_ours_after_all(lookalikes[0])
            later = {j.id for j in self._claim_many(conn, params, [
                j for j, ok in zip(jobs, verdicts, strict=True) if ok and j.id not in sure])}
        mine = [_locked(j, locked_at, me) for j, ok in zip(jobs, verdicts, strict=True)
                if ok and (j.id in sure or j.id in later)]
        return mine, len(found) == params["n"]

    def _lock_many_first(self, params: dict[str, Any],
                         accept: Callable[[JobRow], bool]) -> tuple[list[JobRow], bool]:
        """Rails' optimized_sql for n rows: lock, then check; rows not ours are handed back."""
        me, locked_at = params["me"], params["locked_at"]
        with self.db.connection() as conn:
            if self.strategy == "update_returning":
                found = [_row(r) for r in self.db.run(conn, self.sql.update_returning_n, params).all()]
            else:
                if self.db.run(conn, self.sql.update_limit_n, params).rowcount == 0:
                    return [], False
                found = [_row(r) for r in self.db.run(conn, self.sql.read_back_all,
                                                    {"locked_at": locked_at, "me": me}).all()]
            found.sort(key=lambda j: (j.priority, j.run_at or locked_at, j.id))
            try:
                mine = [job for job in found if accept(job)]
            except Exception:  # a parser bug: nothing we locked may stay locked
                self.db.run(conn, self.sql.unclaim_ids, {"ids": [j.id for j in found], "me": me})
                raise
            others = sorted({j.id for j in found} - {j.id for j in mine})
            if others:
                self.db.run(conn, self.sql.unclaim_ids, {"ids": others, "me": me})
        if others:
            self._lookalike_locked(others[0])
        return [_locked(job, locked_at, me) for job in mine], len(found) == params["n"]

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
        if self.dialect == "sqlite":
            # The SQLite connection autocommits each statement: open the transaction by hand,
            # so an INSERT whose answer is lost is rolled back (the connection is closed on any
            # error) and its retry is the only row.
            with self.db.connection() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                job_id = conn.execute(self.sql.insert, params).lastrowid
                conn.exec_driver_sql("COMMIT")
            return int(job_id)
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
    """One reserve's state: the previous success to delete with it, whether that happened,
    and the rows it already tried to claim (and lost to another worker)."""

    __slots__ = ("deleted", "id", "report", "tried")

    def __init__(self, job_id: int | None, report: Callable[[bool], None] | None = None) -> None:
        self.id = job_id
        self.deleted: bool | None = None
        self.report = report
        self.tried: set[int] = set()


class _Scan(enum.Enum):
    """A strategy's answer when its own statements could not settle the reserve."""

    ON = "scan on"


#: The strategy's row was not ours, or another worker took it first: scan on (Store._scan).
SCAN = _Scan.ON


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


