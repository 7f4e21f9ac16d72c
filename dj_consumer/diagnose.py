"""`dj-consumer check` (is the table set up for us?) and `dj-consumer why ID` (why isn't it running?)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from dj_consumer import ruby_yaml
from dj_consumer.config import Config
from dj_consumer.errors import HandlerParseError
from dj_consumer.models import JobRow
from dj_consumer.registry import Registry
from dj_consumer.schema import REQUIRED_COLUMNS, add_columns
from dj_consumer.store import ServerInfo, Store

QUEUE_INDEX_COLUMNS = ["queue", "priority", "run_at"]


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn" or "error"
    message: str
    fix: str = ""


def queue_index_sql(table: str) -> str:
    return (f"CREATE INDEX index_{table}_on_queue_priority_run_at "
            f"ON {table} (queue, priority, run_at);")


def _queue_index_fix(table: str) -> str:
    return f"{queue_index_sql(table)}\n-- or as a Rails migration:\n{queue_index_migration(table)}"


def has_queue_index(indexes: list[list[str]]) -> bool:
    return any(i[:3] == QUEUE_INDEX_COLUMNS for i in indexes)


def queue_index_migration(table: str) -> str:
    return (f"class AddQueueIndexTo{_camel(table)} < ActiveRecord::Migration[6.1]\n"
            f"  def change\n"
            f"    add_index :{table}, [:queue, :priority, :run_at]\n"
            f"  end\n"
            f"end")


def advise(
    config: Config,
    server: ServerInfo | None,
    columns: list[str] | None,
    indexes: list[list[str]],
    skew: float | None,
    missing_privileges: list[str] | None = None,
) -> list[Finding]:
    """Pure advice from what was read off the database (tested without one).
    `missing_privileges`: what the user may not do on the table; None where nobody asked
    (SQLite has no grants)."""
    out: list[Finding] = []
    table = config.table_name
    if columns is None:
        return [Finding("error", f"table {table!r} does not exist",
                        "run Rails' delayed_job migration (rails generate delayed_job:active_record)")]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        fix = "it is not a delayed_job table, or its migration is incomplete"
        if "id" not in missing:
            fix += f"; add as Rails' migration does: {add_columns(table, missing)}"
        out.append(Finding("error", f"table {table!r} has no column {', '.join(missing)}", fix))
    else:
        out.append(Finding("ok", f"table {table!r} has every delayed_job column"))
    if missing_privileges is not None:
        out.append(_privileges(table, missing_privileges))
    out.extend(_recurring(columns))
    if server is not None:
        if server.skip_locked:
            out.append(Finding("ok", f"{server.dialect} {server.version} supports SKIP LOCKED"))
        elif server.dialect == "mysql":
            out.append(Finding(
                "warn",
                f"server {server.version} has no SKIP LOCKED (MariaDB >= 10.6, MySQL >= 8.0.1)",
                "workers fall back to Rails' default_sql reservation; upgrade to cut collisions",
            ))
        else:
            out.append(Finding("ok", f"{server.dialect} {server.version}: single-writer database, "
                                     "fine for development and the demo"))
    if ["priority", "run_at"] not in [i[:2] for i in indexes]:
        out.append(Finding("warn", "no index on (priority, run_at): every reserve scans the table",
                           f"CREATE INDEX delayed_jobs_priority ON {table} (priority, run_at);"))
    if config.queues and not has_queue_index(indexes):
        out.append(Finding(
            "warn",
            "no index on (queue, priority, run_at): a reserve for your queues scans past every "
            "ready row of other queues",
            _queue_index_fix(table),
        ))
    elif not config.queues:
        out.append(Finding(
            "warn",
            "no --queues: a reserve finds Python jobs by handler name, scanning past ready rows "
            "only Ruby can run (fine for small tables; slow behind a large Ruby backlog)",
            "put the Python jobs in their own queue (queue_as :python), run --queues python, and "
            f"add the index:\n{_queue_index_fix(table)}",
        ))
    else:
        out.append(Finding("ok", "index on (queue, priority, run_at) serves --queues"))
    if skew is not None:
        if abs(skew) > 5:
            out.append(Finding(
                "warn",
                f"this host's clock is {skew:+.1f}s off the database's",
                "run_at and lock ages are written with the worker's clock, as Ruby does: "
                "sync both hosts with NTP",
            ))
        else:
            out.append(Finding("ok", f"clock skew with the database {skew:+.1f}s"))
    return out


PRIVILEGES = ("SELECT", "UPDATE", "DELETE", "INSERT")


def _privileges(table: str, missing: list[str]) -> Finding:
    """A worker refuses to start without SELECT, UPDATE and DELETE (without DELETE every
    success would be unlocked and run again); INSERT is for enqueue only."""
    if not missing:
        return Finding("ok", "the database user may SELECT, UPDATE, DELETE and INSERT on the table")
    needed = [p for p in missing if p != "INSERT"]
    what = " or ".join(missing)
    if needed:
        return Finding("error", f"the database user may not {what} on table {table!r}: a worker "
                                "refuses to start without SELECT, UPDATE and DELETE",
                       f"GRANT SELECT, UPDATE, DELETE ON {table} TO the worker's user;")
    return Finding("warn", f"the database user may not INSERT on table {table!r}: workers run, "
                           "`dj-consumer enqueue` and `schedule` are refused",
                   f"GRANT INSERT ON {table} TO the user that enqueues;")


def _recurring(columns: list[str]) -> list[Finding]:
    """Which recurring convention the table supports (docs/recurring.md)."""
    from dj_consumer.recurring import conventions

    found = conventions(columns)
    out = [Finding("ok", f"recurring rows: {found.describe()}")]
    if found.reoccur_in != found.last_run_at:
        out.append(Finding("warn", "reoccur_in and last_run_at come together; with one only, "
                                   "reoccur_in rows are deleted after a success like any job",
                           "add the missing column (docs/recurring.md)"))
    if found.cron:
        try:
            import cronsim  # noqa: F401
        except ImportError:
            out.append(Finding("warn", "the table has a cron column but cronsim is not installed: "
                                       "workers hand cron rows back unrun",
                               "pip install 'dj_consumer[cron]'"))
    return out


def read_setup(store: Store) -> tuple[list[str] | None, list[list[str]], float | None]:
    """Columns, index column lists, and clock skew (this host minus the database, seconds)."""
    from dj_consumer.admin import Admin
    from dj_consumer.clock import SystemClock

    admin = Admin(store)
    columns = admin.columns()
    if columns is None:
        return None, [], None
    skew = (SystemClock().now() - admin.db_now()).total_seconds()
    return columns, admin.indexes(), skew


def read_indexes(store: Store) -> list[list[str]]:
    """The column lists of the table's indexes (what the worker checks at start)."""
    from dj_consumer.admin import Admin

    return Admin(store).indexes()


# Unfinished rows from which a reserve that reads past rows it cannot run is worth a warning:
# ~10,000 rows cost a first reserve tens of milliseconds; docs/operations.md "Behind a Ruby backlog".
BACKLOG_ROWS = 10_000


def will_scan(config: Config, indexes: list[list[str]]) -> bool:
    return not config.queues or not has_queue_index(indexes)


def backlog_at_least(store: Store, rows: int = BACKLOG_ROWS) -> bool:
    """Does the table hold at least `rows` unfinished rows? Reads at most that many."""
    from dj_consumer.admin import Admin

    return Admin(store).backlog_at_least(rows)


def why(row: JobRow | None, job_id: int, config: Config, registry: Registry,
        now: datetime, last_error: str | None = None) -> list[str]:
    """Every reason this row is not being run right now (empty reasons → it is ready)."""
    if row is None:
        return [f"no row with id {job_id}: it succeeded and was deleted (or never existed)"]
    reasons: list[str] = []
    if row.failed_at is not None:
        first = (last_error or "").split("\n", 1)[0]
        reasons.append(f"failed for good at {row.failed_at:%Y-%m-%d %H:%M:%S} UTC after "
                       f"{plural(row.attempts, 'attempt')}: {first}  "
                       f"(dj-consumer failed retry {row.id})")
    try:
        parsed = ruby_yaml.load(row.handler, max_bytes=config.max_handler_bytes,
                                max_values=config.max_handler_values)
        if registry.spec(parsed.name) is None:
            known = ", ".join(registry.names()) or "none (pass --import MODULE)"
            reasons.append(f"no Python handler for {parsed.name!r} in this process; "
                           f"registered: {known}. A Ruby worker runs it")
    except HandlerParseError as exc:
        name = ruby_yaml.fallback_dispatch_name(row.handler)
        if name is None or registry.spec(name) is None:
            name = f"{name} (not registered here either)"
        reasons.append(f"the handler cannot be parsed ({exc}); a worker with a handler for "
                       f"{name!r} fails it at once, like Ruby's DeserializationError")
    if row.run_at is None:
        reasons.append("run_at is NULL: neither Ruby nor dj_consumer treats it as ready")
    elif row.run_at > now:
        wait = (row.run_at - now).total_seconds()
        why_later = (f" (rescheduled after {plural(row.attempts, 'failed attempt')})"
                     if row.attempts else "")
        reasons.append(f"run_at is {row.run_at:%Y-%m-%d %H:%M:%S} UTC, in {_ago(wait)}{why_later}")
    if row.locked_at is not None and row.failed_at is None:
        reasons += _locked(row, row.locked_at, config, now)
    if config.queues and row.queue not in config.queues:
        served = ", ".join("nil" if q is None else q for q in config.queues)
        reasons.append(f"queue {row.queue or 'nil'!r} is not served by this config (--queues {served})")
    if config.min_priority is not None and row.priority < config.min_priority:
        reasons.append(f"priority {row.priority} is below --min-priority {config.min_priority}")
    if config.max_priority is not None and row.priority > config.max_priority:
        reasons.append(f"priority {row.priority} is above --max-priority {config.max_priority}")
    return reasons


def _locked(row: JobRow, locked_at: datetime, config: Config, now: datetime) -> list[str]:
    """Rails' lock test, as the ready SQL asks it: a lock is `locked_at` (whoever holds it)
    until it is older than max_run_time; a lease-renewing worker's, older than lock_timeout
    (a lock exactly at its limit still holds: the SQL asks `locked_at < limit`)."""
    age = (now - locked_at).total_seconds()
    lease = (config.uses_leases and row.locked_by is not None
             and config.is_lease_holder(row.locked_by))
    horizon = locked_at + timedelta(seconds=config.max_run_time)
    if lease and age <= config.lock_timeout:
        until = (f"it renews its lease, so if it died the row comes back "
                 f"{_ago(max(0.0, config.lock_timeout - age))} from now")
    elif not lease and horizon >= now:
        until = f"the lock is live until {horizon:%Y-%m-%d %H:%M:%S} UTC (max_run_time)"
    else:
        return []
    holder = repr(row.locked_by) if row.locked_by is not None else "no one named (locked_by is NULL)"
    return [f"it is running: locked by {holder} since {locked_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({_ago(age)} ago); {until}"]


def plural(count: int, word: str) -> str:
    """`1 attempt`, `2 attempts`."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def render(findings: list[Finding]) -> str:
    marks = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.level]} {f.message}")
        for fix_line in f.fix.splitlines():
            lines.append(f"        {fix_line}")
    return "\n".join(lines)

