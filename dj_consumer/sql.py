"""Every SQL statement dj_consumer runs, built once per worker from its config.

Values are always bound; only the (quoted) table name and the fixed shape of the filters
(how many queues, how many name patterns) are written into the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import DateTime, Integer, String, Text

from dj_consumer.config import MAX_PROCESSES, Config
from dj_consumer.ruby_yaml import like_literal, sure_prefixes, sure_regex

ROW_COLUMNS = "id, priority, attempts, handler, run_at, queue, locked_at, locked_by, failed_at"
# What a reserve reads back: what the worker needs and no more (every column costs the driver
# a field descriptor to parse per statement).
RESERVE_COLUMNS = "id, priority, attempts, handler, run_at, queue"


@dataclass(frozen=True, eq=False)
class ReserveSQL:
    """The statements that lock one ready row, one per reserve strategy (see Store.strategy)."""

    where: str  # the ready clause they share

    candidates: TextClause
    lock_next: TextClause
    update_returning: TextClause
    update_limit: TextClause
    update_returning_after: TextClause
    scan: TextClause
    scan_after: TextClause


class Statements:
    """The named statements of the row protocol for one table and one worker config."""

    def __init__(self, *, table: str, dialect: str, config: Config, skip_locked: bool,
                 name_filters: Sequence[Sequence[str]], names: Sequence[str] = (),
                 mariadb: bool = False) -> None:
        self.table, self.dialect, self.config = table, dialect, config
        self.name_filters = [tuple(p) for p in name_filters]
        # The sure beginnings of `names`: on MariaDB as one regex (shorter SQL to parse on
        # every reserve), elsewhere one LIKE each.
        self.sure_regex = sure_regex(names) if mariadb else None
        self.sure_prefixes = () if mariadb else tuple(p for n in names for p in sure_prefixes(n))
        self.uses_leases = config.uses_leases
        self.constants = self._constant_params()
        t = table
        # Owner tests are byte-exact: MySQL's text comparison follows the column's collation
        # (case, accents, trailing spaces ignored), so `PY host:…` would pass for `py`.
        self.owned = "CAST(locked_by AS BINARY) = :me" if dialect == "mysql" else "locked_by = :me"
        # SQLite keeps times as text, and Rails writes `…:00` where we write `…:00.000000`:
        # equal instants that compare as unequal strings. `<=` and `>` against our form are
        # right for both, so on SQLite `x < T` is asked as `x <= T - 1µs` and `x >= T` as
        # `x > T - 1µs` (Statements.earlier shifts the bound); both keep using the index.
        self.lt, self.ge = ("<=", ">") if dialect == "sqlite" else ("<", ">=")
        where = self._ready_where()
        order = "ORDER BY priority ASC, run_at ASC"
        lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""

        set_lock = f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me"
        # Whether a row's handler starts the way Psych writes one of our names
        # (ruby_yaml.sure_prefixes): such a row may be claimed before the client parses it;
        # any other row is parsed first, so rows we cannot run are never locked. Exact bytes:
        # MySQL's text comparison ignores case, PostgreSQL's LIKE does not.
        if self.sure_regex:
            self.sure = "handler REGEXP BINARY :sure_regex"
        else:
            handler = "CAST(handler AS BINARY)" if dialect == "mysql" else "handler"
            self.sure = " OR ".join(f"{handler} LIKE :sure_{i} ESCAPE '!'"
                                    for i in range(len(self.sure_prefixes))) or "1 = 0"
        self.plain = self._reserve_statements(where, order, lock)
        # The backlog mark (README "Behind a Ruby backlog"): resume the scan where the last
        # row we could run was found instead of re-reading every Ruby row ahead of it.
        keyset = f"(priority > :mark_p OR (priority = :mark_p AND run_at {self.ge} :mark_run_at))"
        self.marked = self._reserve_statements(f"{where} AND {keyset}", order, lock)
        self.candidates = self.plain.candidates
        self._where = where
        sub = f"SELECT id FROM {t} WHERE {where} {order} LIMIT :n FOR UPDATE SKIP LOCKED"
        # reserve_batch: the same statements for :n rows.
        self.update_returning_n = _typed(
            f"{set_lock} WHERE id IN ({sub}) RETURNING {RESERVE_COLUMNS}", rows=True)
        # skip_locked's batch: the rows, and which are surely ours (claimed before the
        # transaction ends; the rest are parsed after it, holding no lock).
        self.lock_n = _typed(
            f"SELECT {RESERVE_COLUMNS}, :claim_sure = 1 AND ({self.sure}) AS sure FROM {t} "
            f"WHERE {where} {order} LIMIT :n{lock}", rows=True)
        self.update_limit_n = _typed(f"{set_lock} WHERE {where} {order} LIMIT :n")
        self.read_back_all = _typed(
            f"SELECT {RESERVE_COLUMNS} FROM {t} WHERE locked_at = :locked_at AND {self.owned} "
            f"AND failed_at IS NULL {order}", rows=True
        )
        self.claim_ids = _typed(
            f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me WHERE id IN :ids"
        )
        self.claimed_ids = _typed(
            f"SELECT id FROM {t} WHERE id IN :ids AND {self.owned} AND locked_at = :locked_at")
        self.delete_ids = _typed(f"DELETE FROM {t} WHERE id IN :ids AND {self.owned}")
        self.unclaim_ids = _typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE id IN :ids AND {self.owned}"
        )
        # Renewals write the database's clock where there is one (README "Lease renewal").
        renewed = DB_NOW.get(dialect, ":now")
        self.renew_all = _typed(
            f"UPDATE {t} SET locked_at = {renewed} WHERE {self.owned} AND failed_at IS NULL"
        )
        mine = f"id = :id AND {self.owned}"
        # A row we locked but cannot run (a name-filter false positive): hand it straight back.
        self.unclaim = _typed(f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE {mine}")
        # Rails' default_sql reservation: lock one candidate only if it is still ready; the
        # attempts fence also rejects a row another worker ran and rescheduled meanwhile.
        self.claim_if_ready = _typed(
            f"UPDATE {t} SET locked_at = :now, locked_by = :me "
            f"WHERE id = :id AND attempts = :attempts AND {where}"
        )
        # PostgreSQL: the same claim, deleting the previous success in the same statement
        # (one commit per job). The claimed row (if any) and the deleted count, in one row.
        self.claim_if_ready_after = _typed(
            f"WITH done AS (DELETE FROM {t} WHERE id = :done_id AND {self.owned} RETURNING id), "
            f"claimed AS (UPDATE {t} SET locked_at = :now, locked_by = :me "
            f"WHERE id = :id AND id <> :done_id AND attempts = :attempts AND {where} RETURNING id) "
            "SELECT (SELECT count(*) FROM done) AS deleted, (SELECT count(*) FROM claimed) AS claimed")
        self._claim_pairs: dict[int, TextClause] = {}
        self.claim_locked = _typed(f"UPDATE {t} SET locked_at = :now, locked_by = :me WHERE id = :id")
        self.delete = _typed(f"DELETE FROM {t} WHERE {mine}")
        self.reschedule = _typed(
            f"UPDATE {t} SET attempts = :attempts, run_at = :run_at, last_error = :last_error, "
            f"locked_at = NULL, locked_by = NULL, updated_at = :now WHERE {mine}"
        )
        self.fail = _typed(
            f"UPDATE {t} SET attempts = :attempts, failed_at = :now, last_error = :last_error, "
            f"locked_at = NULL, locked_by = NULL, updated_at = :now WHERE {mine}"
        )
        self.interrupt = _typed(
            f"UPDATE {t} SET last_error = :last_error, locked_at = NULL, locked_by = NULL, "
            f"updated_at = :now WHERE {mine}"
        )
        self.renew = _typed(f"UPDATE {t} SET locked_at = {renewed} WHERE {mine}")
        self.release_all = _typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL WHERE {self.owned}"
        )
        self.release_all_except = _typed(
            f"UPDATE {t} SET locked_at = NULL, locked_by = NULL "
            f"WHERE {self.owned} AND id NOT IN :ids"
        )
        # What the worker may do to the table, asked cheaply: PostgreSQL says it; MySQL checks
        # a statement's privileges before it looks at WHERE 1 = 0 (so nothing is touched).
        self.privileges = {
            "SELECT": f"SELECT 1 FROM {t} WHERE 1 = 0",
            "UPDATE": f"UPDATE {t} SET locked_by = locked_by WHERE 1 = 0",
            "DELETE": f"DELETE FROM {t} WHERE 1 = 0",
            "INSERT": f"INSERT INTO {t} (handler) SELECT handler FROM {t} WHERE 1 = 0",
        }
        self.has_privileges = _typed(
            "SELECT " + ", ".join(f"has_table_privilege(:t, '{p}')" for p in self.privileges))
        self.owner = _typed(f"SELECT locked_by FROM {t} WHERE id = :id")
        self.last_error = _typed(f"SELECT last_error FROM {t} WHERE id = :id")
        self.get = _typed(f"SELECT {ROW_COLUMNS} FROM {t} WHERE id = :id", rows=True)
        # An enqueue is written at most once (Store.insert): PostgreSQL also returns the
        # transaction's id, whose txid_status says whether a COMMIT whose reply was lost
        # committed; elsewhere the row itself is read back, with a lock that waits for the
        # old transaction if the server has not finished it yet.
        returning = " RETURNING id, txid_current()" if self.dialect == "postgresql" else ""
        self.insert = _typed(
            f"INSERT INTO {t} (priority, attempts, handler, run_at, queue, created_at, updated_at) "
            f"VALUES (:priority, 0, :handler, :run_at, :queue, :now, :now){returning}"
        )
        self.insert_status = _typed("SELECT txid_status(:xid)")
        share = " LOCK IN SHARE MODE" if self.dialect == "mysql" else ""
        self.insert_check = _typed(f"SELECT id FROM {t} WHERE id = :id{share}")

    def _ready_where(self) -> str:
        """Rails' ready test, our queue and priority filters, and the name prefilters."""
        cfg = self.config
        # A lock older than max_run_time is abandoned for everyone (Ruby's horizon). A lock
        # held by a lease-renewing worker (ours: it refreshes locked_at every heartbeat) is
        # abandoned sooner, after lock_timeout by the database's clock; Ruby's locks never
        # renew, so they keep the full horizon and no live Ruby job is ever taken early.
        stale = f"locked_at {self.lt} :stale"
        if self.uses_leases:
            owners = " OR ".join(test.format(f":lease_{i}")
                                 for i, (test, _) in enumerate(lease_tests(cfg, self.dialect)))
            since = LEASE_STALE.get(self.dialect, f"{self.lt} :lease_stale")
            stale += f" OR (locked_at {since} AND ({owners}))"
        ready = [
            f"((run_at <= :now AND (locked_at IS NULL OR {stale})) OR {self.owned})",
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
        for i, patterns in enumerate(self.name_filters):
            likes = " AND ".join(f"handler LIKE :n{i}_{j} ESCAPE '!'" for j in range(len(patterns)))
            # No prefilter is possible for some names (Hash, String…): the parse decides.
            names.append(f"({likes or '1 = 1'})")
        ready.append("(" + (" OR ".join(names) or "1 = 0") + ")")
        return " AND ".join(ready)

    def claim_pairs(self, n: int) -> TextClause:
        """Claim n rows read earlier, each only if still ready and still at the attempts read
        (binds i0…, a0…): the batch form of claim_if_ready. PostgreSQL returns the ids."""
        stmt = self._claim_pairs.get(n)
        if stmt is None:
            ids = ", ".join(f":i{k}" for k in range(n))
            pairs = ", ".join(f"(:i{k}, :a{k})" for k in range(n))
            returning = " RETURNING id" if self.dialect == "postgresql" else ""
            stmt = self._claim_pairs[n] = _typed(
                f"UPDATE {self.table} SET locked_at = :locked_at, locked_by = :me WHERE id IN ({ids}) "
                f"AND (id, attempts) IN ({pairs}) AND {self._where}{returning}")
        return stmt

    def earlier(self, value: datetime) -> datetime:
        """The bound for `x {lt} :b` / `x {ge} :b` meaning `x < value` / `x >= value`."""
        return value - _MICROSECOND if self.dialect == "sqlite" else value

    def _reserve_statements(self, where: str, order: str, lock: str) -> ReserveSQL:
        t = self.table
        set_lock = f"UPDATE {t} SET locked_at = :locked_at, locked_by = :me"
        # Rails reads the row back by locked_by (a scan: locked_by has no index); id =
        # LAST_INSERT_ID(id) hands us the row's id in the UPDATE's reply, so we read by key.
        set_lock_id = f"{set_lock}, id = LAST_INSERT_ID(id)" if self.dialect == "mysql" else set_lock
        sub = f"SELECT id FROM {t} WHERE {where} {{excl}}{order} LIMIT 1 FOR UPDATE SKIP LOCKED"
        # The scan past rows a reserve rejected (Store._scan): a total order, and a keyset
        # after the last row read, so it goes on where it left off and ends with the rows.
        total = f"{order}, id ASC"
        after = (f"(priority > :key_p OR (priority = :key_p AND run_at {self.ge} :from_run_at "
                 "AND (run_at > :key_run_at OR id > :key_id)))")
        return ReserveSQL(
            where=where,
            candidates=_typed(
                f"SELECT {RESERVE_COLUMNS} FROM {t} WHERE {where} {order} LIMIT :limit", rows=True),
            # SKIP LOCKED takes one row at a time: locking read_ahead rows would hide them from
            # every other worker (who would then sleep, or exit_on_complete) meanwhile.
            lock_next=_typed(
                f"SELECT {RESERVE_COLUMNS} FROM {t} WHERE {where} {order} LIMIT 1{lock}", rows=True),
            # Rails' optimized_sql on PostgreSQL, one round trip:
            # UPDATE … WHERE id IN (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING.
            update_returning=_typed(
                f"{set_lock} WHERE id IN ({sub.format(excl='')}) RETURNING {RESERVE_COLUMNS}",
                rows=True),
            # Rails' optimized_sql on MySQL: UPDATE … ORDER BY … LIMIT 1, then read it back.
            update_limit=_typed(f"{set_lock_id} WHERE {where} {order} LIMIT 1"),
            # PostgreSQL, folding the previous job's success into the same statement (one
            # commit per job, not two). The UPDATE sees the snapshot before the DELETE, so it
            # must skip that row explicitly (ready includes rows locked by us).
            update_returning_after=_typed(
                f"WITH done AS (DELETE FROM {t} WHERE id = :done_id AND {self.owned} "
                f"RETURNING id), locked AS ({set_lock} WHERE id IN "
                f"({sub.format(excl='AND id <> :done_id ')}) RETURNING {RESERVE_COLUMNS}) "
                "SELECT (SELECT count(*) FROM done) AS deleted, locked.* "
                "FROM (SELECT 1) AS one LEFT JOIN locked ON true"),
            scan=_typed(
                f"SELECT {RESERVE_COLUMNS} FROM {t} WHERE {where} {total} LIMIT :limit", rows=True),
            scan_after=_typed(
                f"SELECT {RESERVE_COLUMNS} FROM {t} WHERE {where} AND {after} {total} LIMIT :limit",
                rows=True),
        )

    def keyset(self, row: Any) -> dict[str, Any]:
        """scan_after's binds: the rows after `row` in (priority, run_at, id) order."""
        return {"key_p": row.priority, "key_run_at": row.run_at,
                "from_run_at": self.earlier(row.run_at), "key_id": row.id}

    def ready_params(self, me: str, now: datetime, ts: Callable[[datetime], datetime]) -> dict[str, Any]:
        """Bind values for the ready query at `now` (times through `ts`: MySQL drops fractions)."""
        stale = ts(now - timedelta(seconds=self.config.max_run_time))
        params = dict(self.constants, now=ts(now), stale=self.earlier(stale), me=me)
        if self.uses_leases and self.dialect not in LEASE_STALE:
            lease_stale = ts(now - timedelta(seconds=self.config.lock_timeout))
            params["lease_stale"] = self.earlier(lease_stale)
        return params

    def _constant_params(self) -> dict[str, Any]:
        """The ready query's binds that never change for this config (built once, not per reserve)."""
        cfg = self.config
        params: dict[str, Any] = {}
        if self.uses_leases:
            for i, (_, pattern) in enumerate(lease_tests(cfg, self.dialect)):
                params[f"lease_{i}"] = pattern
            params["lease_s"] = cfg.lock_timeout
            params["lease_us"] = round(cfg.lock_timeout * 1_000_000)
        if cfg.queues:
            for i, queue in enumerate(q for q in cfg.queues if q is not None):
                params[f"queue_{i}"] = queue
        if cfg.min_priority is not None:
            params["min_priority"] = cfg.min_priority
        if cfg.max_priority is not None:
            params["max_priority"] = cfg.max_priority
        for i, patterns in enumerate(self.name_filters):
            for j, pattern in enumerate(patterns):
                params[f"n{i}_{j}"] = pattern
        for i, prefix in enumerate(self.sure_prefixes):
            params[f"sure_{i}"] = like_literal(prefix) + "%"
        if self.sure_regex:
            params["sure_regex"] = self.sure_regex
        return params


#: The database's own clock (naive UTC, as Rails writes times), where it has one; SQLite's
#: writers all share the one host's clock.
DB_NOW = {"mysql": "UTC_TIMESTAMP()", "postgresql": "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"}
#: `locked_at` is older than lock_timeout by that clock.
LEASE_STALE = {"mysql": "< UTC_TIMESTAMP() - INTERVAL :lease_us MICROSECOND",
               "postgresql": f"< {DB_NOW['postgresql']} - :lease_s * INTERVAL '1 second'"}
_MICROSECOND = timedelta(microseconds=1)
_TIMES = ("now", "stale", "lease_stale", "run_at", "locked_at", "mark_run_at", "key_run_at",
          "from_run_at")


def lease_tests(cfg: Config, dialect: str) -> list[tuple[str, str]]:
    """(test with {} for the bind, pattern) per lease locked_by form, matched exactly (bytes,
    case): "{id} host:… pid:…", "{id}:{slot} host:…", and a supervisor's children
    "{id}.{k}[:{slot}] host:…" with k digits only, so no other worker_id passes for one."""
    tests: list[tuple[str, str]] = []
    if dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not (and has [0-9])
        for wid in cfg.lease_ids:
            base = _glob_literal(wid)
            kids = [base + "." + "[0-9]" * n for n in range(1, len(str(MAX_PROCESSES)) + 1)]
            for ident in (base, *kids):
                tests += [("locked_by GLOB {}", f"{ident} host:* pid:*"),
                          ("locked_by GLOB {}", f"{ident}:* host:* pid:*")]
        return tests
    like = "CAST(locked_by AS BINARY) LIKE {} ESCAPE '!'" if dialect == "mysql" \
        else "locked_by LIKE {} ESCAPE '!'"
    regex = "CAST(locked_by AS BINARY) REGEXP {}" if dialect == "mysql" else "locked_by ~ {}"
    for wid in cfg.lease_ids:
        tests += [(like, f"{like_literal(wid)} host:% pid:%"),
                  (like, f"{like_literal(wid)}:% host:% pid:%"),
                  (regex, f"^{_regex_literal(wid)}[.][0-9]+(:.*)? host:.* pid:.*$")]
    return tests


def _regex_literal(text: str) -> str:
    """``text`` matched literally by MySQL's and PostgreSQL's regular expressions."""
    return "".join(f"[{c}]" if not c.isalnum() and c not in "\\^" else
                   ("\\" + c if c in "\\^" else c) for c in text)


def _glob_literal(text: str) -> str:
    """``text`` matched literally by SQLite's GLOB (case-sensitive, unlike its LIKE)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _typed(sql: str, *, rows: bool = False) -> TextClause:
    stmt = text(sql)
    binds: list[Any] = []
    for name in _TIMES:
        if re.search(rf":{name}\b", sql):
            binds.append(bindparam(name, type_=DateTime()))
    if ":ids" in sql:
        binds.append(bindparam("ids", expanding=True, type_=Integer()))
    for key in ("handler", "last_error"):
        if f":{key}" in sql:
            binds.append(bindparam(key, type_=Text()))
    if binds:
        stmt = stmt.bindparams(*binds)
    if rows:
        types = {"id": Integer(), "priority": Integer(), "attempts": Integer(),
                 "handler": Text(), "run_at": DateTime(), "queue": String(),
                 "locked_at": DateTime(), "locked_by": String(), "failed_at": DateTime()}
        present = {k: v for k, v in types.items() if k in sql}
        return stmt.columns(**present)  # type: ignore[return-value,arg-type]
    return stmt
