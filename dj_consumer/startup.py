"""What a worker checks and sets up once, before its first reserve: handlers registered, the
table and server (Store.check), the user's grants, the outcome participants the table
supports (recurring rows, run records); then what it advises (no SKIP LOCKED, scans)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from sqlalchemy.exc import SQLAlchemyError

from dj_consumer.config import Config
from dj_consumer.db import ServerInfo, short_error
from dj_consumer.errors import ConfigError
from dj_consumer.store import Store

if TYPE_CHECKING:
    from dj_consumer.worker import Worker

log = structlog.get_logger("dj_consumer.worker")


def check(worker: Worker) -> ServerInfo:
    """Fail fast, with one line, on what would stop the worker from doing its work."""
    if not worker.registry.names():
        raise ConfigError(
            "no job handlers are registered; decorate a function with @job.run('SomeJob') "
            "in a module and pass it with --import MODULE"
        )
    worker._set_filters()
    for name in worker.registry.orphan_hooks():
        log.warning("worker.hook_without_run", name=name,
                    hint="hooks registered for a name with no @job.run never fire")
    server = worker.store.check()
    _check_privileges(worker.store, worker.config)
    _add_recurring(worker)
    _add_runs(worker)
    return server


def advise(store: Store, config: Config, server: ServerInfo) -> None:
    """Log what would make this worker's reserves cheaper."""
    if server.dialect == "mysql" and not server.skip_locked:
        log.info("worker.no_skip_locked", server=server.version,
                 hint="reserving with Rails' default_sql strategy; MariaDB >= 10.6 or "
                      "MySQL >= 8.0.1 add SKIP LOCKED and fewer collisions between workers")
    _warn_if_scanning(store, config)


def _add_recurring(worker: Worker) -> None:
    """Recurring rows (recurring.py), when the table has their columns."""
    from dj_consumer import recurring

    conventions = recurring.detect(worker.store)
    if conventions.any:
        worker.outcomes.add(recurring.Recurring(worker.store, conventions,
                                              default_zone=worker.config.cron_zone))
        log.info("worker.recurring", conventions=conventions.describe())


def _add_runs(worker: Worker) -> None:
    """Run records (runs/tracking.py), when the runs table exists."""
    from dj_consumer.runs import tracking

    worker.runs = tracking.attach(worker.store, worker.config, worker.clock)
    if worker.runs is not None:
        worker.outcomes.add(worker.runs)
        worker.heartbeat.watchers.append(worker.runs.beat)
        log.info("worker.run_records", table=worker.config.runs_table,
                 batches=worker.runs.runs.has_batches)


def _check_privileges(store: Store, config: Config) -> None:
    """A worker that may not DELETE would unlock (and so rerun) every success: refuse to
    start without SELECT, UPDATE and DELETE; INSERT is only for enqueue."""
    try:
        missing = store.missing_privileges()
    except SQLAlchemyError as exc:
        log.warning("worker.privileges_unknown", error=short_error(exc))
        return
    table = config.table_name
    needed = [p for p in missing if p != "INSERT"]
    if needed:
        raise ConfigError(
            f"the database user may not {' or '.join(needed)} on table {table!r}; a worker "
            f"needs SELECT, UPDATE and DELETE there (GRANT SELECT, UPDATE, DELETE ON {table} "
            "TO the worker's user)")
    if missing:
        log.warning("worker.no_insert_privilege", table=table,
                    hint="the worker does not need INSERT; `dj-consumer enqueue` does")


def _warn_if_scanning(store: Store, config: Config) -> None:
    from dj_consumer import diagnose

    try:
        indexes = diagnose.read_indexes(store)
        # Only where it matters: a big table (a bounded count), not a 7-row demo.
        scans = diagnose.will_scan(config, indexes) and diagnose.backlog_at_least(store)
    except SQLAlchemyError:
        return
    if scans:
        log.warning(
            "worker.will_scan", unfinished_rows_at_least=diagnose.BACKLOG_ROWS,
            hint="reserves read past ready rows we cannot run; behind a large Ruby backlog "
                 "that is slow. Serve a queue (--queues python) with an index on "
                 "(queue, priority, run_at): `dj-consumer check` prints the migration",
        )
