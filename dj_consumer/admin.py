"""What an operator asks of the table: listings, counts, status, failed rows retried or deleted,
and the table's shape for `check`. The statements are in admin_sql; this runs them on a Store's
engine and turns rows into plain records. Nothing here runs or reserves a job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.types import DateTime, Integer

from dj_consumer import admin_sql as q
from dj_consumer import ruby_yaml
from dj_consumer.errors import HandlerParseError
from dj_consumer.store import Store

STATES = ("all", "ready", "scheduled", "running", "failed")
#: Ids per statement for bulk retry/delete and sample lookups.
CHUNK = 500
#: MySQL runs one statement on one thread: the status pass is split into this many id ranges
#: run at once (4 connections; they fit the pool of a CLI store).
STATUS_PARTS = 4
_MARKERS = {"wrapper": q.WRAPPER, "performable": q.PERFORMABLE}
#: Every bind of admin_sql with its type (datetimes are written per dialect by SQLAlchemy).
_BINDS: dict[str, dict[str, Any]] = {
    "now": {"type_": DateTime()}, "horizon": {"type_": DateTime()},
    "since": {"type_": DateTime()}, "ids": {"type_": Integer(), "expanding": True},
}
#: The datetime columns each kind of result carries.
_ROW_TIMES = ("run_at", "locked_at", "failed_at")
_STATUS_TIMES = ("first_run_at", "first_locked_at")
_MYSQL_TEXT_BYTES = {"TINYTEXT": 255, "TEXT": 65_535, "MEDIUMTEXT": 16_777_215,
                     "LONGTEXT": 4_294_967_295}


@dataclass(frozen=True)
class Filter:
    """Which rows: a dispatch name, a queue (None: any; "nil": the nil queue), a state, for
    failed rows a failed_at lower bound, and text the handler contains."""

    name: str | None = None
    queue: str | None = None
    state: str = "all"
    since: datetime | None = None
    text: str | None = None


@dataclass(frozen=True)
class Row:
    id: int
    priority: int
    attempts: int
    handler: str
    run_at: datetime | None
    queue: str | None
    locked_at: datetime | None
    locked_by: str | None
    failed_at: datetime | None
    last_error: str | None  # the first 500 characters in listings, whole in `show`


@dataclass
class NameStatus:
    """One (queue, name) line of `dj-consumer status`."""

    queue: str | None
    name: str
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    oldest_ready: datetime | None = None
    holders: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)


class Admin:
    """Operator queries on one delayed_jobs table, through `store`'s engine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.dialect
        self.table = store.table

    def _sql(self, template: str, times: Sequence[str] = ()) -> Any:
        """The statement for this table, its binds typed as declared in _BINDS and the result
        columns `times` read as datetimes (SQLite returns text otherwise)."""
        stmt = text(template.format(table=self.table))
        used = [bindparam(name, **kind) for name, kind in _BINDS.items() if name in stmt._bindparams]
        stmt = stmt.bindparams(*used)
        return stmt.columns(**{name: DateTime() for name in times}) if times else stmt

    def _params(self, f: Filter, now: datetime, horizon: datetime) -> dict[str, Any]:
        if f.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {f.state!r}")
        name_like = "%"
        if f.name:  # every form Psych writes spells the class or method name out
            word = f.name.replace("#", ".").rsplit(".", 1)[-1]
            name_like = f"%{ruby_yaml.like_literal(word)}%"
        text_like = f"%{ruby_yaml.like_literal(f.text)}%" if f.text else "%"
        params: dict[str, Any] = {
            "any_queue": int(f.queue is None), "nil_queue": int(f.queue == "nil"),
            "queue": f.queue, "name_like": name_like, "text_like": text_like,
            "any_time": int(f.since is None), "since": self.store.ts(f.since or now),
            "now": self.store.ts(now), "horizon": self.store.ts(horizon),
        }
        for state in STATES:
            params["all_states" if state == "all" else state] = int(f.state == state)
        return params

    # -- listings ---------------------------------------------------------------------------

    def page(self, f: Filter, now: datetime, horizon: datetime, limit: int,
             *, latest_failed_first: bool = False) -> tuple[list[Row], int]:
        """Up to `limit` matching rows and how many match in all. A name filter parses each
        candidate the LIKE lets through, so it costs a pass over those rows."""
        params = self._params(f, now, horizon)
        with self.store.engine.connect() as conn:
            if not f.name:
                total = int(conn.execute(self._sql(q.COUNT_MATCHING), params).scalar_one())
                template = q.LIST_FAILED if latest_failed_first else q.LIST_JOBS
                stmt = self._sql(template, _ROW_TIMES)
                page = conn.execute(stmt, {**params, "limit": limit}).all()
                return [_row(r) for r in page], total
            found = self._named(conn, f.name, params)
            if latest_failed_first:
                found.sort(key=lambda r: (r.failed_at or datetime.min, r.id), reverse=True)
            else:
                found.sort(key=lambda r: (r.priority, r.run_at or datetime.max, r.id))
            return self._get(conn, [r.id for r in found[:limit]]), len(found)

    def ids(self, f: Filter, now: datetime, horizon: datetime) -> list[int]:
        """Every matching id (for `failed retry --all` and `failed delete --all`)."""
        params = self._params(f, now, horizon)
        with self.store.engine.connect() as conn:
            if f.name:
                return sorted(r.id for r in self._named(conn, f.name, params))
            return [int(r.id) for r in conn.execute(self._sql(q.MATCHING_IDS), params)]

    def _named(self, conn: Connection, name: str, params: dict[str, Any]) -> list[Any]:
        """The matching rows whose handler loads to `name` (id, priority, run_at, failed_at)."""
        found: list[Any] = []
        stmt = self._sql(q.CANDIDATES, ("run_at", "failed_at"))
        after = 0
        while True:
            batch = conn.execute(stmt, {**params, "after": after, "batch": CHUNK}).all()
            found += [r for r in batch if job_name(_text(r.handler)) == name]
            if len(batch) < CHUNK:
                return found
            after = int(batch[-1].id)

    def get(self, job_id: int) -> Row | None:
        """One whole row, last_error in full."""
        with self.store.engine.connect() as conn:
            rows = self._get(conn, [job_id])
        return rows[0] if rows else None

    def _get(self, conn: Connection, ids: Sequence[int]) -> list[Row]:
        rows: list[Row] = []
        for chunk in _chunks(ids):
            stmt = self._sql(q.GET_ROWS, _ROW_TIMES)
            rows += [_row(r) for r in conn.execute(stmt, {"ids": chunk})]
        order = {job_id: i for i, job_id in enumerate(ids)}
        return sorted(rows, key=lambda r: order[r.id])

    # -- failed rows ------------------------------------------------------------------------

    def retry(self, ids: Sequence[int], now: datetime, horizon: datetime) -> int:
        """Reset failed rows to run now; returns how many were reset."""
        params = {"now": self.store.ts(now), "horizon": self.store.ts(horizon)}
        return self._each_chunk(q.RETRY_FAILED, ids, params)

    def delete(self, ids: Sequence[int], horizon: datetime) -> int:
        """Delete failed rows; returns how many were deleted."""
        return self._each_chunk(q.DELETE_FAILED, ids, {"horizon": self.store.ts(horizon)})

    def _each_chunk(self, template: str, ids: Sequence[int], params: dict[str, Any]) -> int:
        done = 0
        with self.store.engine.connect() as conn:
            for chunk in _chunks(ids):
                done += int(conn.execute(self._sql(template), {**params, "ids": chunk}).rowcount)
        return done

    # -- status -----------------------------------------------------------------------------

    def status(self, now: datetime, horizon: datetime) -> list[NameStatus]:
        """Per queue and name: ready, scheduled, running (by holder), failed, oldest ready."""
        with self.store.engine.connect() as conn:
            first, last = conn.execute(self._sql(q.ID_RANGE)).one()
        if first is None:
            return []
        parts = STATUS_PARTS if self.dialect == "mysql" else 1
        step = (int(last) - int(first)) // parts + 1
        ranges = [(int(first) + i * step, min(int(first) + (i + 1) * step - 1, int(last)))
                  for i in range(parts)]
        params = {"now": self.store.ts(now), "horizon": self.store.ts(horizon), **_MARKERS}
        with ThreadPoolExecutor(parts) as pool:
            results = list(pool.map(lambda r: self._status_part(params, *r), ranges))
        groups = [g for part in results for g in part]
        with self.store.engine.connect() as conn:
            names = self._names(conn, {int(g.sample) for g in groups})
        out: dict[tuple[str | None, str], NameStatus] = {}
        for g in groups:
            name = names.get(int(g.sample), "?")
            line = out.setdefault((g.queue, name), NameStatus(g.queue, name))
            _count(line, g)
        return sorted(out.values(), key=lambda s: (s.queue or "", s.name))

    def _status_part(self, params: dict[str, Any], first: int, last: int) -> list[Any]:
        template = {"mysql": q.STATUS_MYSQL, "postgresql": q.STATUS_POSTGRESQL,
                    "sqlite": q.STATUS_SQLITE}[self.dialect]
        with self.store.engine.connect() as conn:
            if self.dialect == "postgresql":
                # Our sessions never seq-scan (db.make_engine: the reserve must walk the index);
                # a pass over the whole table should, in parallel, and group by hashing (the
                # planner, guessing many groups, would sort a million rows by the name lines).
                conn.exec_driver_sql("SET enable_seqscan TO on; SET enable_sort TO off")
            try:
                stmt = self._sql(template, _STATUS_TIMES)
                return list(conn.execute(stmt, {**params, "first_id": first, "last_id": last}))
            finally:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql("RESET enable_sort; SET enable_seqscan TO off")

    def _names(self, conn: Connection, samples: Iterable[int]) -> dict[int, str]:
        names: dict[int, str] = {}
        for chunk in _chunks(sorted(samples)):
            stmt = self._sql(q.SAMPLE_HANDLERS)
            for r in conn.execute(stmt, {"ids": chunk}):
                names[int(r.id)] = job_name(_text(r.handler))
        return names

    # -- the table's shape (dj-consumer check) ----------------------------------------------

    def columns(self) -> list[str] | None:
        """The table's column names, or None when it does not exist."""
        with self.store.engine.connect() as conn:
            insp = inspect(conn)
            if not insp.has_table(self.store.config.table_name):
                return None
            return [c["name"] for c in insp.get_columns(self.store.config.table_name)]

    def indexes(self) -> list[list[str]]:
        """The column lists of the table's indexes."""
        with self.store.engine.connect() as conn:
            found = inspect(conn).get_indexes(self.store.config.table_name)
        return [[str(c) for c in i["column_names"]] for i in found]

    def column_limits(self) -> dict[str, tuple[int, str]]:
        """column → (the most it holds, its type) where the database enforces a size: varchar
        lengths in characters, MySQL TEXT types in bytes. SQLite stores any length."""
        if self.dialect == "sqlite":
            return {}
        with self.store.engine.connect() as conn:
            columns = inspect(conn).get_columns(self.store.config.table_name)
        limits: dict[str, tuple[int, str]] = {}
        for c in columns:
            kind = type(c["type"]).__name__.upper()
            length = getattr(c["type"], "length", None)
            if self.dialect == "mysql" and kind in _MYSQL_TEXT_BYTES:
                limits[c["name"]] = (_MYSQL_TEXT_BYTES[kind], kind)
            elif isinstance(length, int):
                limits[c["name"]] = (length, f"{kind.lower()}({length})")
        return limits

    def backlog_at_least(self, rows: int) -> bool:
        """Does the table hold at least `rows` unfinished rows?"""
        with self.store.engine.connect() as conn:
            found = conn.execute(self._sql(q.BACKLOG_AT_LEAST), {"rows": rows}).scalar_one()
        return int(found) >= rows

    def db_now(self) -> datetime:
        """The database's clock (UTC, naive)."""
        with self.store.engine.connect() as conn:
            raw = conn.execute(text(q.DB_NOW[self.dialect])).scalar_one()
        return raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))


def job_name(handler: str) -> str:
    """The dispatch name a handler loads to, or Ruby's fallback name marked unparseable."""
    try:
        return ruby_yaml.load(handler).name
    except HandlerParseError:
        return f"{ruby_yaml.fallback_name(handler) or '?'} (unparseable)"


def horizon(now: datetime, max_run_time: float) -> datetime:
    """Locks taken before this are stale (Ruby's max_run_time rule)."""
    return now - timedelta(seconds=max_run_time)


def _count(line: NameStatus, g: Any) -> None:
    n = int(g.n)
    if g.failed:
        line.failed += n
    elif g.holder is not None:
        line.running += n
        count, since = line.holders.get(g.holder, (0, None))
        first = g.first_locked_at
        line.holders[g.holder] = (count + n, first if since is None else min(since, first))
    elif g.due:
        line.ready += n
        first = g.first_run_at
        line.oldest_ready = first if line.oldest_ready is None else min(line.oldest_ready, first)
    else:
        line.scheduled += n


def _row(r: Any) -> Row:
    return Row(id=int(r.id), priority=int(r.priority), attempts=int(r.attempts),
               handler=_text(r.handler), run_at=r.run_at, queue=r.queue, locked_at=r.locked_at,
               locked_by=r.locked_by, failed_at=r.failed_at,
               last_error=None if r.error_head is None else _text(r.error_head))


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])
