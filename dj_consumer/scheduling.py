"""Writing and listing recurring rows: `dj_consumer.schedule(...)`, `dj-consumer schedule`,
`dj-consumer schedules`.

A schedule is a row Ruby can load and run too: the handler `enqueue` writes, plus the
`cron` column (delayed_cron_job: `Delayed::Job.enqueue(job, cron: "...")`, run_at = the
expression's next time) or `reoccur_in` (the seed fork's `Delayed::Job.schedule(job,
every: 3.hours)`: whole seconds in a string, run_at now). `unique` (the default) keeps one
row per name and payload, the `scheduled?` idiom of delayed_cron_job's README: scheduling
again (every deploy) finds the row and, if the expression or interval changed, updates it,
under a lock so two deploys at once do not both insert.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dj_consumer.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from dj_consumer.clock import Clock
    from dj_consumer.config import Config
    from dj_consumer.registry import Registry
    from dj_consumer.store import Store

__all__ = ["ScheduleRow", "Scheduled", "parse_every", "schedule", "schedule_of", "schedules"]

_HUMAN = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.IGNORECASE)


def parse_every(value: timedelta | int | str) -> timedelta:
    """An interval: a timedelta, whole seconds (10800, "10800"), ISO-8601 ("PT3H") or short
    ("3h", "90m", "1h30m", "2d", "1w"); whole seconds, at least one."""
    from dj_consumer import cron

    if isinstance(value, str):
        text = value.strip()
        m = _HUMAN.fullmatch(text)
        if text and not text.isdigit() and m is not None and any(m.groups()):
            w, d, h, mi, s = (int(g or 0) for g in m.groups())
            value = timedelta(weeks=w, days=d, hours=h, minutes=mi, seconds=s)
    try:
        interval = cron.parse_interval(value)
    except cron.IntervalError as exc:
        raise ConfigError(f"every: {exc}; e.g. 3h, 90m, 10800 or PT3H") from None
    if interval.total_seconds() != int(interval.total_seconds()):
        raise ConfigError(f"every: {value!r} is not whole seconds (reoccur_in holds seconds)")
    return interval


@dataclass(frozen=True)
class Scheduled:
    """What `schedule` did: the row's id, whether it was inserted or changed, and when it runs."""

    id: int
    created: bool
    changed: bool
    run_at: datetime | None
    cron: str | None
    every: int | None  # seconds
    failed: bool = False  # the row found is failed (failed_at set): it does not run


@dataclass(frozen=True)
class ScheduleRow:
    """One recurring row as `dj-consumer schedules` shows it."""

    id: int
    name: str
    queue: str | None
    priority: int
    cron: str | None
    every: str | None
    next_run: datetime | None
    last_run: datetime | None
    runs: int | None  # cron rows count every run in attempts
    attempts: int
    running: str | None  # locked_by
    failed_at: datetime | None
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("next_run", "last_run", "failed_at"):
            out[key] = None if out[key] is None else out[key].isoformat(sep=" ")
        return out


def schedule(
    config: Mapping[str, Any] | Config | str,
    name: str,
    payload: Any = None,
    *,
    every: timedelta | int | str | None = None,
    cron: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    shape: str = "object",
    kwargs: Mapping[str, Any] | None = None,
    unique: bool = True,
    clock: Clock | None = None,
    store: Store | None = None,
    registry: Registry | None = None,
) -> Scheduled:
    """Insert a recurring row (or, `unique`, find the one for this name and payload)."""
    from dj_consumer import cron as cronlib
    from dj_consumer.clock import SystemClock
    from dj_consumer.config import Config
    from dj_consumer.enqueue import new_job
    from dj_consumer.store import Store

    if (every is None) == (cron is None):
        raise ConfigError("schedule needs exactly one of every= (an interval) or cron= (an "
                          "expression)")
    cfg = Config.from_mapping({"database_url": config} if isinstance(config, str) else config)
    seconds = int(parse_every(every).total_seconds()) if every is not None else None
    expr = None
    if cron is not None:
        expr = cron.strip()
        try:
            cronlib.parse(expr, default_zone=cfg.cron_zone)
        except (cronlib.CronError, cronlib.CronUnavailable) as exc:
            raise ConfigError(str(exc)) from None
    if queue is None:
        from dj_consumer import job as default_registry

        spec = (registry if registry is not None else default_registry).spec(name)
        queue = spec.queue if spec is not None else None
    job = new_job(name, payload, shape=shape, queue=queue, priority=priority, kwargs=kwargs)
    own = store is None
    st = store or Store(cfg)
    try:
        columns = table_columns(st)
        if expr is not None and "cron" not in columns:
            raise ConfigError(f"table {cfg.table_name!r} has no cron column: add it as "
                              "delayed_cron_job's migration does (add_column :delayed_jobs, "
                              ":cron, :string)")
        if seconds is not None and not {"reoccur_in", "last_run_at"} <= columns:
            raise ConfigError(f"table {cfg.table_name!r} has no reoccur_in/last_run_at columns: "
                              "add them (add_column :delayed_jobs, :reoccur_in, :string; "
                              "add_column :delayed_jobs, :last_run_at, :datetime)")
        now = (clock or SystemClock()).now()
        run_at = (cronlib.parse(expr, default_zone=cfg.cron_zone).next_after(now)
                  if expr is not None else now.replace(microsecond=0))
        with _locked(st) as conn:
            if unique:
                found = _find(st, conn, columns, name, job.handler)
                if found is not None:
                    return _update(st, conn, found, expr, seconds, now, cfg.cron_zone)
            job_id = _insert(st, conn, job.handler, job.queue, job.priority, run_at, now,
                             expr, seconds)
        return Scheduled(job_id, True, True, st.ts(run_at), expr, seconds)
    finally:
        if own:
            st.close()


def table_columns(store: Store) -> set[str]:
    """The names of the store's table's columns."""
    from sqlalchemy import inspect

    with store.engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns(store.config.table_name)}


@contextmanager
def _locked(store: Store) -> Iterator[Connection]:
    """A transaction that no other `schedule` of this table runs beside."""
    from sqlalchemy import text

    key = f"dj_consumer.schedule:{store.config.table_name}"
    if store.dialect == "sqlite":
        with store.db.connection() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        return
    with store.db.connection(tx=True) as conn:
        if store.dialect == "postgresql":
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
                yield conn
            return
        got = conn.execute(text("SELECT GET_LOCK(:key, 30)"), {"key": key[:64]}).scalar()
        conn.commit()
        if got != 1:
            raise ConfigError("another `schedule` of this table holds its lock for 30s; try again")
        try:
            with conn.begin():
                yield conn
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:key)"), {"key": key[:64]})
            conn.commit()


def _recurring_where(columns: set[str]) -> str:
    parts = []
    if "cron" in columns:
        parts.append("(cron IS NOT NULL AND cron <> '')")
    if "reoccur_in" in columns:
        parts.append("(reoccur_in IS NOT NULL AND reoccur_in <> '')")
    return " OR ".join(parts) or "1 = 0"


def _key(handler: str) -> tuple[str, Any] | None:
    """(name, payload) of a handler, without what differs between two enqueues of the same
    ActiveJob (its job_id, enqueued_at)."""
    from dj_consumer import ruby_yaml
    from dj_consumer.errors import HandlerParseError

    try:
        parsed = ruby_yaml.load(handler)
    except HandlerParseError:
        return None
    payload = parsed.payload
    if isinstance(payload, dict) and "job_class" in payload and "arguments" in payload:
        payload = payload["arguments"]
    return parsed.name, repr(payload)


def _find(store: Store, conn: Connection, columns: set[str], name: str,
          handler: str) -> Any:
    from sqlalchemy import text

    wanted = _key(handler)
    cols = ", ".join(c for c in ("cron", "reoccur_in") if c in columns)
    rows = conn.execute(text(
        f"SELECT id, handler, run_at, locked_by, failed_at, {cols} FROM {store.table} "
        f"WHERE {_recurring_where(columns)} ORDER BY id")).all()
    for row in rows:
        if _key(row.handler) == wanted:
            return row
    return None


def _update(store: Store, conn: Connection, row: Any, expr: str | None, seconds: int | None,
            now: datetime, zone: str) -> Scheduled:
    from sqlalchemy import DateTime, bindparam, text

    from dj_consumer import cron as cronlib

    old_cron = (getattr(row, "cron", None) or "").strip() or None
    old_every = (getattr(row, "reoccur_in", None) or "").strip() or None
    new_every = None if seconds is None else str(seconds)
    failed = row.failed_at is not None
    if old_cron == expr and old_every == new_every:
        return Scheduled(row.id, False, False, _dt(row.run_at), expr, seconds, failed)
    sets: dict[str, Any] = {}
    if hasattr(row, "cron"):
        sets["cron"] = expr
    if hasattr(row, "reoccur_in"):
        sets["reoccur_in"] = new_every
    run_at = _dt(row.run_at)
    if expr is not None and row.locked_by is None:
        # As delayed_cron_job's before_save: a changed expression moves run_at.
        run_at = store.ts(cronlib.parse(expr, default_zone=zone).next_after(now))
        sets["run_at"] = run_at
    assignments = ", ".join(f"{k} = :{k}" for k in sets)
    stmt = text(f"UPDATE {store.table} SET {assignments}, updated_at = :now WHERE id = :id"
                ).bindparams(bindparam("now", type_=DateTime()),
                             *([bindparam("run_at", type_=DateTime())] if "run_at" in sets else []))
    conn.execute(stmt, {**sets, "now": store.ts(now), "id": row.id})
    return Scheduled(row.id, False, True, run_at, expr, seconds, failed)


def _insert(store: Store, conn: Connection, handler: str, queue: str | None, priority: int,
            run_at: datetime, now: datetime, expr: str | None, seconds: int | None) -> int:
    from sqlalchemy import DateTime, Text, bindparam, text

    column, value = ("cron", expr) if expr is not None else ("reoccur_in", str(seconds))
    sql = (f"INSERT INTO {store.table} (priority, attempts, handler, run_at, queue, created_at, "
           f"updated_at, {column}) VALUES (:priority, 0, :handler, :run_at, :queue, :now, :now, "
           ":value)")
    if store.dialect == "postgresql":
        sql += " RETURNING id"
    stmt = text(sql).bindparams(bindparam("run_at", type_=DateTime()),
                                bindparam("now", type_=DateTime()),
                                bindparam("handler", type_=Text()))
    result = conn.execute(stmt, {"priority": priority, "handler": handler,
                                 "run_at": store.ts(run_at), "queue": queue,
                                 "now": store.ts(now), "value": value})
    return int(result.scalar_one() if store.dialect == "postgresql" else result.lastrowid)


def schedules(config: Mapping[str, Any] | Config | str, *,
              store: Store | None = None) -> list[ScheduleRow]:
    """Every recurring row of the table, by next run."""
    from dj_consumer.config import Config
    from dj_consumer.store import Store

    cfg = Config.from_mapping({"database_url": config} if isinstance(config, str) else config)
    own = store is None
    st = store or Store(cfg)
    try:
        columns = table_columns(st)
        if not ({"cron"} <= columns or {"reoccur_in", "last_run_at"} <= columns):
            raise ConfigError(f"table {cfg.table_name!r} has neither a cron column nor "
                              "reoccur_in/last_run_at: it holds no recurring rows "
                              "(docs/recurring.md)")
        return _read_schedules(st, columns, f"WHERE {_recurring_where(columns)} ORDER BY run_at, id")
    finally:
        if own:
            st.close()


def schedule_of(store: Store, job_id: int, columns: set[str]) -> ScheduleRow | None:
    """Row `job_id` as a schedule (one primary-key read), or None: gone, or not recurring.
    `columns`: the table's (the caller looks them up once)."""
    if not ({"cron"} <= columns or {"reoccur_in", "last_run_at"} <= columns):
        return None
    found = _read_schedules(store, columns, f"WHERE id = :id AND ({_recurring_where(columns)})",
                            {"id": job_id})
    return found[0] if found else None


def _read_schedules(store: Store, columns: set[str], where: str,
                    params: dict[str, Any] | None = None) -> list[ScheduleRow]:
    from sqlalchemy import text

    from dj_consumer import ruby_yaml

    has_cron, has_every = "cron" in columns, {"reoccur_in", "last_run_at"} <= columns
    cols = ["id", "handler", "queue", "priority", "run_at", "attempts", "locked_by",
            "failed_at", "last_error", "updated_at"]
    cols += ["cron"] if has_cron else []
    cols += ["reoccur_in", "last_run_at"] if has_every else []
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {', '.join(cols)} FROM {store.table} {where}"),
                            params or {}).all()
    out = []
    for row in rows:
        expr = (getattr(row, "cron", None) or "").strip() or None
        every = None if expr else (getattr(row, "reoccur_in", None) or "").strip() or None
        name = ruby_yaml.fallback_name(row.handler) or "?"
        with contextlib.suppress(Exception):  # a row we cannot parse: its fallback name
            name = ruby_yaml.load(row.handler).display_name.split(" ", 1)[0]
        last = getattr(row, "last_run_at", None) if every else (
            row.updated_at if row.attempts else None)
        error = row.last_error.split("\n", 1)[0][:200] if row.last_error else None
        out.append(ScheduleRow(
            id=row.id, name=name, queue=row.queue, priority=row.priority, cron=expr,
            every=every, next_run=_dt(row.run_at), last_run=_dt(last),
            runs=row.attempts if expr else None, attempts=row.attempts, running=row.locked_by,
            failed_at=_dt(row.failed_at), last_error=error))
    return out


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
