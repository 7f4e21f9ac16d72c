"""Every statement of the row protocol, each one whole under its name with one line of intent
(as procrastinate's queries.sql). Filled in once per worker (Statements):

  {t}       the quoted table            {owned}   `locked_by = :me`, byte-exact (ready.owned)
  {ready}   the ready clause (ready.py: the one part that is built, with its constant binds)
  {cols}    RESERVE_COLUMNS             {order}   ORDER BY priority ASC, run_at ASC
  {db_now}  the database's clock (ready.DB_NOW; `:now` on SQLite)

Values are always bound. Bind types are declared once (BIND_TYPES), and each statement that
returns rows declares its columns. The one-round-trip MySQL reserve is written whole in
reserve/mysql_script.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import DateTime, Integer, String, Text, TypeEngine

from dj_consumer.config import Config
from dj_consumer.ready import DB_NOW, LEASE_STALE, owned, ready_clause

ROW_COLUMNS = ("id", "priority", "attempts", "handler", "run_at", "queue", "locked_at",
               "locked_by", "failed_at")
# What a reserve reads back: what the worker needs and no more (every column costs the driver
# a field descriptor to parse per statement).
RESERVE_COLUMNS = ROW_COLUMNS[:6]
ORDER = "ORDER BY priority ASC, run_at ASC"

#: Every bind that is not an int or a str, declared once.
BIND_TYPES: dict[str, TypeEngine[Any]] = {
    **{name: DateTime() for name in ("now", "stale", "lease_stale", "run_at", "locked_at",
                                      "mark_run_at", "key_run_at", "from_run_at")},
    "handler": Text(), "last_error": Text(),
}
COLUMN_TYPES: dict[str, TypeEngine[Any]] = {
    "id": Integer(), "priority": Integer(), "attempts": Integer(), "handler": Text(),
    "run_at": DateTime(), "queue": String(), "locked_at": DateTime(), "locked_by": String(),
    "failed_at": DateTime(),
}

# -- reserve: one set per ready clause (plain, or past the backlog mark) -------------------

# candidates: the first ready rows, read without a lock (Rails' default_sql).
CANDIDATES = "SELECT {cols} FROM {t} WHERE {ready} {order} LIMIT :limit"
# lock_next: the first ready row, locked (SKIP LOCKED where the server has it). One row at a
# time: locking read_ahead rows would hide them from every other worker meanwhile.
LOCK_NEXT = "SELECT {cols} FROM {t} WHERE {ready} {order} LIMIT 1{skip_locked}"
# update_returning: Rails' optimized_sql on PostgreSQL, one round trip.
UPDATE_RETURNING = (
    "UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN "
    "(SELECT id FROM {t} WHERE {ready} {order} LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {cols}")
# update_limit: Rails' optimized_sql on MySQL. Rails reads the row back by locked_by (a scan:
# locked_by has no index); id = LAST_INSERT_ID(id) hands us its id in the reply instead.
UPDATE_LIMIT = ("UPDATE {t} SET locked_at = :locked_at, locked_by = :me, id = LAST_INSERT_ID(id) "
                "WHERE {ready} {order} LIMIT 1")
# update_returning_after: update_returning deleting the previous success in the same
# statement (PostgreSQL). The UPDATE sees the snapshot before the DELETE, so it must skip
# that row explicitly (ready includes rows locked by us).
UPDATE_RETURNING_AFTER = (
    "WITH done AS (DELETE FROM {t} WHERE id = :done_id AND {owned} RETURNING id), "
    "locked AS (UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN "
    "(SELECT id FROM {t} WHERE {ready} AND id <> :done_id {order} LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "RETURNING {cols}) "
    "SELECT (SELECT count(*) FROM done) AS deleted, locked.* FROM (SELECT 1) AS one "
    "LEFT JOIN locked ON true")
# scan: the ready rows in a total order (reserve/scan.py) ...
SCAN = "SELECT {cols} FROM {t} WHERE {ready} {order}, id ASC LIMIT :limit"
# scan_after: ... and the page after the last row read (keyset), so it ends with the rows.
SCAN_AFTER = (
    "SELECT {cols} FROM {t} WHERE {ready} AND (priority > :key_p OR (priority = :key_p AND "
    "run_at {ge} :from_run_at AND (run_at > :key_run_at OR id > :key_id))) {order}, id ASC "
    "LIMIT :limit")
# marked: the ready clause past the backlog mark (reserve/mark.py).
MARKED = "{ready} AND (priority > :mark_p OR (priority = :mark_p AND run_at {ge} :mark_run_at))"

# -- reserve_batch: :n rows ----------------------------------------------------------------

# update_returning_n: update_returning for :n rows.
UPDATE_RETURNING_N = (
    "UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN "
    "(SELECT id FROM {t} WHERE {ready} {order} LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING {cols}")
# lock_n: skip_locked's batch: the rows, and which are surely ours (claimed before the
# transaction ends; the rest are parsed after it, holding no lock).
LOCK_N = ("SELECT {cols}, :claim_sure = 1 AND ({sure}) AS sure FROM {t} WHERE {ready} {order} "
          "LIMIT :n{skip_locked}")
# update_limit_n: update_limit for :n rows, read back with read_back_all.
UPDATE_LIMIT_N = "UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE {ready} {order} LIMIT :n"
READ_BACK_ALL = ("SELECT {cols} FROM {t} WHERE locked_at = :locked_at AND {owned} "
                 "AND failed_at IS NULL {order}")
# claim_ids: lock rows already known to be ours (the sure rows of lock_n).
CLAIM_IDS = "UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN :ids"
# claimed_ids: which of a claim_pairs' rows we hold (MySQL says only how many).
CLAIMED_IDS = "SELECT id FROM {t} WHERE id IN :ids AND {owned} AND locked_at = :locked_at"
# claim_pairs: claim_if_ready for n rows (ids and attempts as i0, a0, …; the lists are its
# only per-size shape). PostgreSQL returns the ids.
CLAIM_PAIRS = ("UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN ({ids}) "
               "AND (id, attempts) IN ({pairs}) AND {ready}{returning_id}")
DELETE_IDS = "DELETE FROM {t} WHERE id IN :ids AND {owned}"
UNCLAIM_IDS = "UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE id IN :ids AND {owned}"

# -- one row -------------------------------------------------------------------------------

# claim_if_ready: Rails' default_sql claim: lock one candidate only if it is still ready; the
# attempts fence also rejects a row another worker ran and rescheduled meanwhile.
CLAIM_IF_READY = ("UPDATE {t} SET locked_at = :now, locked_by = :me "
                  "WHERE id = :id AND attempts = :attempts AND {ready}")
# claim_if_ready_after: the same, deleting the previous success in the same statement
# (PostgreSQL: one commit per job). The deleted count and the claimed count, in one row.
CLAIM_IF_READY_AFTER = (
    "WITH done AS (DELETE FROM {t} WHERE id = :done_id AND {owned} RETURNING id), "
    "claimed AS (UPDATE {t} SET locked_at = :now, locked_by = :me "
    "WHERE id = :id AND id <> :done_id AND attempts = :attempts AND {ready} RETURNING id) "
    "SELECT (SELECT count(*) FROM done) AS deleted, (SELECT count(*) FROM claimed) AS claimed")
# claim_locked: the row lock_next locked in this transaction is ours.
CLAIM_LOCKED = "UPDATE {t} SET locked_at = :now, locked_by = :me WHERE id = :id"
# unclaim: hand back a row we locked but cannot run.
UNCLAIM = "UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE id = :id AND {owned}"
# delete: success, the row goes away (Delayed::Worker#run → job.destroy).
DELETE = "DELETE FROM {t} WHERE id = :id AND {owned}"
# reschedule: a failed attempt with attempts left (Delayed::Worker#reschedule).
RESCHEDULE = ("UPDATE {t} SET attempts = :attempts, run_at = :run_at, last_error = :last_error, "
              "locked_at = NULL, locked_by = NULL, updated_at = :now WHERE id = :id AND {owned}")
# fail: the last attempt failed (Delayed::Worker#failed, destroy_failed_jobs off).
FAIL = ("UPDATE {t} SET attempts = :attempts, failed_at = :now, last_error = :last_error, "
        "locked_at = NULL, locked_by = NULL, updated_at = :now WHERE id = :id AND {owned}")
# interrupt: unlock without spending an attempt (shutdown interrupted the job).
INTERRUPT = ("UPDATE {t} SET last_error = :last_error, locked_at = NULL, locked_by = NULL, "
             "updated_at = :now WHERE id = :id AND {owned}")
# renew, renew_all: refresh our leases by the database's clock (docs/operations.md "Lease renewal").
RENEW = "UPDATE {t} SET locked_at = {db_now} WHERE id = :id AND {owned}"
RENEW_ALL = "UPDATE {t} SET locked_at = {db_now} WHERE {owned} AND failed_at IS NULL"
# release_all(_except): Delayed::Job.clear_locks!, but for successes whose DELETE failed.
RELEASE_ALL = "UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE {owned}"
RELEASE_ALL_EXCEPT = ("UPDATE {t} SET locked_at = NULL, locked_by = NULL "
                      "WHERE {owned} AND id NOT IN :ids")
OWNER = "SELECT locked_by FROM {t} WHERE id = :id"
LAST_ERROR = "SELECT last_error FROM {t} WHERE id = :id"
GET = "SELECT {row_cols} FROM {t} WHERE id = :id"

# -- enqueue, written at most once (Store.insert) ------------------------------------------

# insert: PostgreSQL also returns the transaction's id, whose txid_status says whether a
# COMMIT whose reply was lost committed.
INSERT = ("INSERT INTO {t} (priority, attempts, handler, run_at, queue, created_at, updated_at) "
          "VALUES (:priority, 0, :handler, :run_at, :queue, :now, :now){returning_txid}")
INSERT_STATUS = "SELECT txid_status(:xid)"
# insert_check: elsewhere the row itself is read back, with a lock that waits for the old
# transaction if the server has not finished it yet.
INSERT_CHECK = "SELECT id FROM {t} WHERE id = :id{share}"

# -- privileges: what the worker may do, asked cheaply -------------------------------------

# MySQL checks a statement's privileges before it looks at WHERE 1 = 0 (nothing is touched).
PRIVILEGES = {
    "SELECT": "SELECT 1 FROM {t} WHERE 1 = 0",
    "UPDATE": "UPDATE {t} SET locked_by = locked_by WHERE 1 = 0",
    "DELETE": "DELETE FROM {t} WHERE 1 = 0",
    "INSERT": "INSERT INTO {t} (handler) SELECT handler FROM {t} WHERE 1 = 0",
}
# PostgreSQL says it.
HAS_PRIVILEGES = ("SELECT has_table_privilege(:t, 'SELECT'), has_table_privilege(:t, 'UPDATE'), "
                  "has_table_privilege(:t, 'DELETE'), has_table_privilege(:t, 'INSERT')")


def statement(sql: str, columns: Sequence[str] = ()) -> TextClause:
    """A statement with its binds typed from BIND_TYPES (`:ids` an expanding list of ints)
    and, if it returns rows, its `columns` typed."""
    stmt = text(sql)
    binds = [bindparam(name, type_=BIND_TYPES[name]) for name in stmt._bindparams
             if name in BIND_TYPES]
    if "ids" in stmt._bindparams:
        binds.append(bindparam("ids", expanding=True, type_=Integer()))
    if binds:
        stmt = stmt.bindparams(*binds)
    if columns:
        return stmt.columns(**{c: COLUMN_TYPES[c] for c in columns})  # type: ignore[return-value]
    return stmt


@dataclass(frozen=True, eq=False)
class ReserveSQL:
    """The statements that lock one ready row, for one ready clause (see reserve/)."""

    where: str  # the ready clause they share
    candidates: TextClause
    lock_next: TextClause
    update_returning: TextClause
    update_limit: TextClause
    update_returning_after: TextClause
    scan: TextClause
    scan_after: TextClause


class Statements:
    """The named statements for one table and one worker config."""

    def __init__(self, *, table: str, dialect: str, config: Config, skip_locked: bool,
                 name_filters: Sequence[Sequence[str]], names: Sequence[str] = (),
                 mariadb: bool = False) -> None:
        self.table, self.dialect, self.config = table, dialect, config
        self.uses_leases = config.uses_leases
        ready = ready_clause(config, dialect, name_filters=name_filters, names=names,
                             mariadb=mariadb)
        self.constants, self.sure, self.owned = ready.constants, ready.sure, owned(dialect)
        self._filters = ready.filters
        # SQLite keeps times as text, and Rails writes `…:00` where we write `…:00.000000`:
        # equal instants that compare as unequal strings. `<=` and `>` against our form are
        # right for both, so on SQLite `x < T` is asked as `x <= T - 1µs` and `x >= T` as
        # `x > T - 1µs` (Statements.earlier shifts the bound); both keep using the index.
        ge = ">" if dialect == "sqlite" else ">="
        self._parts = {
            "t": table, "owned": self.owned, "ready": ready.where, "sure": ready.sure,
            "cols": ", ".join(RESERVE_COLUMNS), "row_cols": ", ".join(ROW_COLUMNS),
            "order": ORDER, "ge": ge, "db_now": DB_NOW.get(dialect, ":now"),
            "skip_locked": " FOR UPDATE SKIP LOCKED" if skip_locked else "",
            "returning_id": " RETURNING id" if dialect == "postgresql" else "",
            "returning_txid": " RETURNING id, txid_current()" if dialect == "postgresql" else "",
            "share": " LOCK IN SHARE MODE" if dialect == "mysql" else "",
        }
        self.plain = self._reserve(ready.where)
        self.marked = self._reserve(MARKED.format(ready=ready.where, ge=ge))
        self.candidates = self.plain.candidates
        rows, row = RESERVE_COLUMNS, ROW_COLUMNS
        s = self._stmt
        self.update_returning_n, self.lock_n = s(UPDATE_RETURNING_N, rows), s(LOCK_N, rows)
        self.update_limit_n, self.read_back_all = s(UPDATE_LIMIT_N), s(READ_BACK_ALL, rows)
        self.claim_ids, self.claimed_ids = s(CLAIM_IDS), s(CLAIMED_IDS)
        self.delete_ids, self.unclaim_ids = s(DELETE_IDS), s(UNCLAIM_IDS)
        self.claim_if_ready, self.claim_if_ready_after = s(CLAIM_IF_READY), s(CLAIM_IF_READY_AFTER)
        self.claim_locked, self.unclaim, self.delete = s(CLAIM_LOCKED), s(UNCLAIM), s(DELETE)
        self.reschedule, self.fail, self.interrupt = s(RESCHEDULE), s(FAIL), s(INTERRUPT)
        self.renew, self.renew_all = s(RENEW), s(RENEW_ALL)
        self.release_all, self.release_all_except = s(RELEASE_ALL), s(RELEASE_ALL_EXCEPT)
        self.owner, self.last_error, self.get = s(OWNER), s(LAST_ERROR), s(GET, row)
        self.insert, self.insert_status, self.insert_check = s(INSERT), s(INSERT_STATUS), s(INSERT_CHECK)
        self.privileges = {p: sql.format(**self._parts) for p, sql in PRIVILEGES.items()}
        self.has_privileges = s(HAS_PRIVILEGES)
        self._claim_pairs: dict[int, TextClause] = {}

    def _stmt(self, template: str, columns: Sequence[str] = (), **parts: str) -> TextClause:
        return statement(template.format(**{**self._parts, **parts}), columns)

    def _reserve(self, where: str) -> ReserveSQL:
        s, rows = self._stmt, RESERVE_COLUMNS
        return ReserveSQL(
            where=where,
            candidates=s(CANDIDATES, rows, ready=where),
            lock_next=s(LOCK_NEXT, rows, ready=where),
            update_returning=s(UPDATE_RETURNING, rows, ready=where),
            update_limit=s(UPDATE_LIMIT, ready=where),
            update_returning_after=s(UPDATE_RETURNING_AFTER, ready=where),
            scan=s(SCAN, rows, ready=where),
            scan_after=s(SCAN_AFTER, rows, ready=where),
        )

    def filters(self) -> str:
        """Which rows this worker serves at all: queues, priorities, name prefilters (binds
        from `constants`)."""
        return self._filters

    def claim_pairs(self, n: int) -> TextClause:
        """CLAIM_PAIRS for n rows (binds i0…, a0…), made once per n."""
        stmt = self._claim_pairs.get(n)
        if stmt is None:
            stmt = self._claim_pairs[n] = self._stmt(
                CLAIM_PAIRS, ids=", ".join(f":i{k}" for k in range(n)),
                pairs=", ".join(f"(:i{k}, :a{k})" for k in range(n)))
        return stmt

    def earlier(self, value: datetime) -> datetime:
        """The bound for `x {lt} :b` / `x {ge} :b` meaning `x < value` / `x >= value`."""
        return value - _MICROSECOND if self.dialect == "sqlite" else value

    def keyset(self, row: Any) -> dict[str, Any]:
        """scan_after's binds: the rows after `row` in (priority, run_at, id) order."""
        return {"key_p": row.priority, "key_run_at": row.run_at,
                "from_run_at": self.earlier(row.run_at), "key_id": row.id}

    def ready_params(self, me: str, now: datetime, ts: Callable[[datetime], datetime]) -> dict[str, Any]:
        """Bind values for the ready clause at `now` (times through `ts`: MySQL drops fractions)."""
        stale = ts(now - timedelta(seconds=self.config.max_run_time))
        params = dict(self.constants, now=ts(now), stale=self.earlier(stale), me=me)
        if self.uses_leases and self.dialect not in LEASE_STALE:
            lease_stale = ts(now - timedelta(seconds=self.config.lock_timeout))
            params["lease_stale"] = self.earlier(lease_stale)
        return params


_MICROSECOND = timedelta(microseconds=1)
