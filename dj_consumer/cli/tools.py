"""`dj-consumer check` (is the table set up?), `why ID` (why isn't it running?), `schema`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dj_consumer.cli._parser import add_command
from dj_consumer.errors import ConfigError


def add(sub: Any) -> None:
    p = add_command(
        sub, "why", run_why, imports=True, json=True,
        help="explain why one row is not running right now",
        description="Every reason row ID is not being run: failed, future run_at, running "
                    "(where, since when), queue or priority not served, no handler registered "
                    "(pass the same --import and flags as your workers), unparseable handler.")
    p.add_argument("id", type=int)
    add_command(
        sub, "check", run_check, json=True,
        help="inspect the table and server; print what to add (indexes, upgrades)",
        description="Check columns, indexes, SKIP LOCKED support and clock skew, and print the "
                    "SQL and Rails migration for anything missing. Exit 0 when all is well, "
                    "1 with warnings, 2 with errors.")
    p = add_command(sub, "schema", run_schema,
                    help="print (or --create) the Rails delayed_jobs table, or with --runs the "
                         "run records and batch tables; --notify installs PostgreSQL's notify "
                         "trigger")
    p.add_argument("--create", action="store_true", help="create the table if it is missing")
    p.add_argument("--runs", action="store_true",
                   help="the run records and batch tables (docs/runs.md 'Job runs') instead")
    p.add_argument("--recurring", action="store_true",
                   help="the recurring columns (cron, reoccur_in, last_run_at; "
                        "docs/recurring.md): print the ALTER TABLE, or --create adds them")
    p.add_argument("--notify", action="store_true",
                   help="PostgreSQL: install the trigger that NOTIFYs idle workers of new rows "
                        "(docs/operations.md 'Pick-up latency'); with --rails print it as a migration")
    p.add_argument("--rails", action="store_true",
                   help="with --runs or --notify: print the Rails migration instead of SQL")


def run_check(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from dj_consumer import diagnose
    from dj_consumer.cli._run import store

    st = store(args, check=False)
    try:
        try:
            columns, indexes, skew = diagnose.read_setup(st)
        except SQLAlchemyError as exc:
            from dj_consumer.db import unreachable

            raise unreachable(st.config.url, exc) from None
        server = None
        privileges = None
        if columns is not None:
            try:
                server = st.check()
            except ConfigError as exc:
                if "has no column" not in str(exc):
                    raise  # advise() reports the missing columns itself
            if st.dialect != "sqlite":  # a file has no grants
                try:
                    privileges = st.missing_privileges()
                except SQLAlchemyError:
                    privileges = None  # cannot tell: say nothing rather than guess
        notifies = _notifies(st) if columns is not None else None
    finally:
        st.close()
    findings = diagnose.advise(st.config, server, columns, indexes, skew, privileges)
    if notifies is not None:
        findings.append(notifies)
    if args.json:
        print(json.dumps([{"level": f.level, "message": f.message, "fix": f.fix or None}
                          for f in findings], indent=2))
    else:
        print(diagnose.render(findings))
    levels = {f.level for f in findings}
    return 2 if "error" in levels else 1 if "warn" in levels else 0


def _notifies(st: Any) -> Any:
    """PostgreSQL: is the notify trigger there? (Optional, so never a warning.)"""
    from sqlalchemy.exc import SQLAlchemyError

    from dj_consumer import notify
    from dj_consumer.diagnose import Finding

    if st.dialect != "postgresql":
        return None
    try:
        there = notify.installed(st)
    except SQLAlchemyError:
        return None
    if there:
        return Finding("ok", "notify trigger installed: idle workers LISTEN and wake at once")
    return Finding("ok", "no notify trigger (optional): idle workers wake by the prober "
                         "(idle_poll) and polling",
                   "dj-consumer schema --notify installs it "
                   "(--notify --rails prints a Rails migration)")


def run_why(args: argparse.Namespace) -> int:
    from dj_consumer import diagnose
    from dj_consumer.cli._run import import_handlers, registry, store
    from dj_consumer.clock import SystemClock

    import_handlers(args.imports)
    st = store(args)
    try:
        row = st.get(args.id)
        last_error = st.last_error(args.id) if row is not None else None
    finally:
        st.close()
    reasons = diagnose.why(row, args.id, st.config, registry(), SystemClock().now(), last_error)
    if args.json:
        print(json.dumps({"id": args.id, "ready": not reasons, "reasons": reasons}, indent=2))
    elif not reasons:
        print(f"job {args.id} is ready: the next poll of a worker with this config runs it")
    else:
        print(f"job {args.id} is not running because:")
        for reason in reasons:
            print(f"  - {reason}")
    return 0 if not reasons else 1


def run_schema(args: argparse.Namespace) -> int:
    from dj_consumer import schema
    from dj_consumer.cli._run import store

    if args.notify:
        return _notify_schema(args)
    if args.rails and not args.runs:
        raise ConfigError("--rails prints the run records' (--runs) or the notify trigger's "
                          "(--notify) migration: give one of them too (the delayed_jobs "
                          "migration is Rails': rails generate delayed_job:active_record)")
    if args.rails:
        return _runs_migration(args)
    st = store(args, check=False)
    if args.recurring:
        try:
            return _recurring_schema(args, st)
        finally:
            st.close()
    if args.runs:
        try:
            return _runs_schema(args, st)
        finally:
            st.close()
    name = st.config.table_name
    table = schema.delayed_jobs_table(name)
    try:
        if not args.create:
            for statement in schema.ddl(st.engine, [table]):
                print(statement + ";")
            return 0
        if schema.existing(st.engine, [name]):
            st.check()  # an existing table must be a delayed_jobs table: one line if not
            print(f"table {name} exists")
        else:
            schema.create(st.engine, name)
            print(f"table {name} created")
    finally:
        st.close()
    return 0


def _notify_schema(args: argparse.Namespace) -> int:
    """PostgreSQL's notify trigger: install it, or with --rails print its migration."""
    from dj_consumer import notify
    from dj_consumer.cli._run import store

    if args.rails:
        args.database_url = args.database_url or "postgresql+psycopg://unused/unused"
    st = store(args, check=False)
    try:
        if st.dialect != "postgresql":
            raise ConfigError("--notify is for PostgreSQL (LISTEN/NOTIFY); on MySQL, MariaDB "
                              "and SQLite idle workers use the prober (idle_poll)")
        name = st.config.table_name
        if args.rails:
            print(notify.rails_migration(name), end="")
        else:
            st.check()  # the table must exist and be a delayed_jobs table: one line if not
            notify.install(st)
            print(f"table {name}: notify trigger installed (channel {notify.Names(name).channel})")
    finally:
        st.close()
    return 0


def _recurring_schema(args: argparse.Namespace, st: Any) -> int:
    from dj_consumer import schema

    name = st.config.table_name
    if not args.create:
        have = schema.column_names(st.engine, name)  # what it lacks, if it exists; else all
        for statement in schema.recurring_columns_sql(st.engine, name, have=have):
            print(statement + ";")
        return 0
    st.check()  # the table must exist and be a delayed_jobs table: one line if not
    added = schema.add_recurring_columns(st.engine, name)
    print(f"table {name}: added {', '.join(s.split()[-2] for s in added)}" if added
          else f"table {name} has the recurring columns")
    return 0


def _runs_schema(args: argparse.Namespace, st: Any) -> int:
    from dj_consumer import schema as dj_schema
    from dj_consumer.runs import schema
    from dj_consumer.runs.store import detect

    cfg = st.config
    tables = schema.tables(cfg.runs_table, cfg.batches_table)
    if not args.create:
        for statement in dj_schema.ddl(st.engine, tables):
            print(statement + ";")
        return 0
    existing = dj_schema.existing(st.engine, [t.name for t in tables])
    schema.create(st.engine, cfg.runs_table, cfg.batches_table)
    with st.engine.connect() as conn:  # an existing table must have our columns: one line if not
        detect(conn, runs_table=cfg.runs_table, table_name=cfg.table_name,
               batches_table=cfg.batches_table)
    for table in tables:
        print(f"table {table.name} {'exists' if table.name in existing else 'created'}")
    return 0


def _runs_migration(args: argparse.Namespace) -> int:
    """The migration needs the table names only: no database (a placeholder URL if none)."""
    from dj_consumer.cli._run import config
    from dj_consumer.runs import schema

    try:
        cfg = config(args)
    except ConfigError as exc:
        if "database_url is required" not in str(exc):
            raise
        args.database_url = "sqlite:///unused.db"
        cfg = config(args)
    print(schema.rails_migration(cfg.runs_table, cfg.batches_table), end="")
    return 0
