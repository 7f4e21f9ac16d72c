"""`dj-consumer`: work, parse, enqueue, jobs, failed, schema. The only place that configures logging."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from dj_consumer import __version__, ruby_yaml
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError, DJConsumerError, HandlerParseError

EXAMPLES = """\
examples:
  dj-consumer work --database-url mysql+pymysql://root@127.0.0.1/app --import myapp.jobs
  dj-consumer work --import myapp.jobs --queues mail,default -n 4 --exit-on-complete
  DJ_DATABASE_URL=sqlite:///demo.db dj-consumer jobs
  dj-consumer parse --id 42            # why is my job (not) picked up?
  dj-consumer enqueue NewsletterJob --payload '{"list_id": 7}' --queue mail

Every flag also reads an environment variable: --database-url is DJ_DATABASE_URL,
--queues is DJ_QUEUES (comma separated), -n is DJ_CONCURRENCY, and so on.
"""


def configure_logging(fmt: str = "console", level: int = logging.INFO) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    if level <= logging.DEBUG:
        logging.basicConfig(level=level, stream=sys.stderr)


def _db_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("database")
    g.add_argument("--database-url", metavar="URL",
                   help="SQLAlchemy URL: mysql+pymysql://user:pw@host/db, "
                        "postgresql+psycopg://host/db, sqlite:///file.db  [DJ_DATABASE_URL]")
    g.add_argument("--table-name", metavar="NAME", help="default delayed_jobs  [DJ_TABLE_NAME]")
    g.add_argument("--sql-log", action="store_true", default=None,
                   help="log every SQL statement  [DJ_SQL_LOG]")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["console", "json"],
                   help="console for a terminal, json for log shippers  [DJ_LOG_FORMAT]")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module (or a .py file) that registers handlers; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dj-consumer",
        description="Run a Rails delayed_jobs table's jobs with Python handlers, "
                    "beside the Ruby delayed_job workers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dj-consumer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    work = sub.add_parser(
        "work", help="run jobs (like Ruby's script/delayed_job run)",
        description="Reserve and run the jobs that have a Python handler. Jobs whose name has "
                    "no handler in the imported modules are never touched, so Ruby workers keep "
                    "them. SIGTERM/SIGINT: finish the job in hand, release locks, exit 0.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _db_flags(work)
    _common(work)
    g = work.add_argument_group("what to run (as Ruby's script/delayed_job)")
    g.add_argument("--queues", "--queue", metavar="A,B",
                   help="only these queues (comma separated); 'nil' is the nil queue  [DJ_QUEUES]")
    g.add_argument("--min-priority", type=int, metavar="N", help="[DJ_MIN_PRIORITY]")
    g.add_argument("--max-priority", type=int, metavar="N", help="[DJ_MAX_PRIORITY]")
    g.add_argument("--exit-on-complete", "-x", action="store_true", default=None,
                   help="exit when no job is ready  [DJ_EXIT_ON_COMPLETE]")
    g = work.add_argument_group("worker")
    g.add_argument("--worker-id", metavar="ID",
                   help="locked_by prefix (default py): 'ID host:H pid:P'  [DJ_WORKER_ID]")
    g.add_argument("-n", "--concurrency", type=int, metavar="N",
                   help="jobs in flight in this process (default 1)  [DJ_CONCURRENCY]")
    g.add_argument("--sleep-delay", type=float, metavar="S",
                   help="seconds to wait when nothing is ready (default 5)  [DJ_SLEEP_DELAY]")
    g.add_argument("--read-ahead", type=int, metavar="N",
                   help="candidate rows per reserve (default 5)  [DJ_READ_AHEAD]")
    g.add_argument("--max-attempts", type=int, metavar="N", help="default 25  [DJ_MAX_ATTEMPTS]")
    g.add_argument("--max-run-time", type=float, metavar="S",
                   help="seconds before timed_out is set; also the stale-lock horizon "
                        "(default 14400)  [DJ_MAX_RUN_TIME]")
    g.add_argument("--destroy-failed-jobs", action="store_true", default=None,
                   help="delete jobs that fail for good (Ruby's default) instead of keeping them "
                        "with failed_at  [DJ_DESTROY_FAILED_JOBS]")

    parse = sub.add_parser(
        "parse", help="show how a handler parses: name, display_name, payload as JSON",
        description="Parse a handler (a file, stdin, or --id N from the table) and print its "
                    "dispatch name, Ruby display name and payload: the tool for 'why is my "
                    "job not picked up?'. The name must equal a @job.run name.")
    parse.add_argument("file", nargs="?", help="a file holding the handler YAML; - for stdin")
    parse.add_argument("--id", type=int, help="read the handler of this row from the table")
    _db_flags(parse)
    _common(parse)

    enq = sub.add_parser("enqueue", help="insert a job whose handler Ruby can load too")
    enq.add_argument("name", help="Ruby class name, e.g. NewsletterJob")
    enq.add_argument("--payload", default="{}", metavar="JSON",
                     help="attributes (object/struct) or arguments (active_job), as JSON")
    enq.add_argument("--as", dest="shape", choices=ruby_yaml.SHAPES,
                     default="object", help="handler shape (default object)")
    enq.add_argument("--queue", help="queue name (default nil)")
    enq.add_argument("--priority", type=int, default=0)
    enq.add_argument("--run-at", metavar="ISO-TIME", help="UTC, e.g. 2026-01-01T12:00:00")
    _db_flags(enq)
    _common(enq)

    jobs = sub.add_parser("jobs", help="list rows: id, name, queue, attempts, run_at, state")
    jobs.add_argument("--limit", type=int, default=50)
    _db_flags(jobs)
    _common(jobs)

    failed = sub.add_parser("failed", help="list failed rows, or --retry ID to run one again")
    failed.add_argument("--retry", type=int, metavar="ID",
                        help="clear failed_at and attempts so the job runs again now")
    _db_flags(failed)
    _common(failed)

    chk = sub.add_parser(
        "check", help="inspect the table and server; print what to add (indexes, upgrades)",
        description="Check columns, indexes, SKIP LOCKED support and clock skew, and print the "
                    "SQL and Rails migration for anything missing. Exit 0 when all is well, "
                    "1 with warnings, 2 with errors.")
    chk.add_argument("--queues", "--queue", metavar="A,B", help="the queues your workers serve")
    _db_flags(chk)
    _common(chk)

    why = sub.add_parser(
        "why", help="explain why one row is not running right now",
        description="Every reason row ID is not being run: failed, future run_at, locked (by "
                    "whom, until when), queue or priority not served, no handler registered "
                    "(pass the same --import and --queues as your workers), unparseable handler.")
    why.add_argument("id", type=int)
    why.add_argument("--queues", "--queue", metavar="A,B")
    why.add_argument("--min-priority", type=int, metavar="N")
    why.add_argument("--max-priority", type=int, metavar="N")
    why.add_argument("--max-run-time", type=float, metavar="S")
    _db_flags(why)
    _common(why)

    sch = sub.add_parser("schema", help="print (or --create) the Rails delayed_jobs table")
    sch.add_argument("--create", action="store_true", help="create the table if it is missing")
    _db_flags(sch)
    _common(sch)
    return parser


def _config(args: argparse.Namespace) -> Config:
    flags = {
        key: getattr(args, key, None)
        for key in ("database_url", "table_name", "sql_log", "log_format", "queues",
                    "min_priority", "max_priority", "exit_on_complete", "worker_id",
                    "concurrency", "sleep_delay", "read_ahead", "max_attempts", "max_run_time",
                    "destroy_failed_jobs")
    }
    # Flags win over DJ_* variables; both go through Config's one parse ("a,nil": a and the nil queue).
    return Config.from_env(os.environ, **flags)


def _import_handlers(modules: Sequence[str]) -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            if name.endswith(".py") or os.sep in name:
                path = Path(name).resolve()
                sys.path.insert(0, str(path.parent))
                importlib.import_module(path.stem)
            else:
                importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(
                f"--import {name}: {type(exc).__name__}: {exc}"
            ) from None


def cmd_work(args: argparse.Namespace) -> int:
    from dj_consumer import job
    from dj_consumer.worker import Worker

    cfg = _config(args)
    _import_handlers(args.imports)
    worker = Worker(cfg, job)
    try:
        worker.start()
    finally:
        worker.close()
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    from dj_consumer import job
    from dj_consumer.store import Store

    _import_handlers(args.imports)
    if args.id is not None:
        store = Store(_config(args))
        store.check()
        row = store.get(args.id)
        store.close()
        if row is None:
            raise ConfigError(f"no row with id {args.id}")
        handler: str = row.handler
    elif args.file in (None, "-"):
        handler = sys.stdin.read()
    else:
        handler = Path(args.file).read_text(encoding="utf-8", errors="surrogateescape")
    try:
        parsed = ruby_yaml.load(handler)
    except HandlerParseError as exc:
        print(json.dumps({"error": str(exc), "fallback_name": ruby_yaml.fallback_name(handler)},
                         indent=2))
        return 1
    out = {
        "name": parsed.name,
        "display_name": parsed.display_name,
        "payload": parsed.payload,
    }
    if args.imports:
        out["registered"] = parsed.name in job
    print(json.dumps(out, indent=2, default=to_json, ensure_ascii=False))
    return 0


def to_json(value: Any) -> Any:
    """JSON for the values ruby_yaml builds (dates, decimals, bytes, sets, Ruby objects)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        return str(value)
    return repr(value)


def cmd_enqueue(args: argparse.Namespace) -> int:
    from dj_consumer.enqueue import enqueue

    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--payload is not JSON: {exc}") from None
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            raise ConfigError(f"--run-at {args.run_at!r} is not an ISO time") from None
    cfg = _config(args)
    job_id = enqueue(cfg, args.name, payload, shape=args.shape, queue=args.queue,
                     priority=args.priority, run_at=run_at)
    print(job_id)
    return 0


def cmd_jobs(args: argparse.Namespace, *, failed_only: bool = False) -> int:
    import sqlalchemy as sa

    from dj_consumer.schema import delayed_jobs_table
    from dj_consumer.store import Store

    cfg = _config(args)
    store = Store(cfg)
    store.check()
    t = delayed_jobs_table(cfg.table_name)
    query = sa.select(t.c.id, t.c.handler, t.c.queue, t.c.priority, t.c.attempts, t.c.run_at,
                      t.c.locked_by, t.c.failed_at, t.c.last_error)
    if failed_only:
        query = query.where(t.c.failed_at.is_not(None))
    query = query.order_by(t.c.priority, t.c.run_at).limit(args.limit)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    print(f"{'id':>8}  {'name':<32} {'queue':<10} {'pri':>4} {'att':>4}  {'run_at':<19}  state")
    for r in rows:
        try:
            name = ruby_yaml.load(r.handler).display_name
        except HandlerParseError:
            name = f"{ruby_yaml.fallback_name(r.handler) or '?'} (unparseable)"
        if r.failed_at:
            state = f"failed {r.failed_at:%Y-%m-%d %H:%M:%S}: {r.last_error.splitlines()[0][:60] if r.last_error else ''}"
        elif r.locked_by:
            state = f"locked by {r.locked_by}"
        else:
            state = "waiting" if r.attempts == 0 else "retrying"
        run_at = f"{r.run_at:%Y-%m-%d %H:%M:%S}" if r.run_at else "-"
        print(f"{r.id:>8}  {name[:32]:<32} {(r.queue or '-')[:10]:<10} {r.priority:>4} "
              f"{r.attempts:>4}  {run_at:<19}  {state}")
    store.close()
    return 0


def cmd_failed(args: argparse.Namespace) -> int:
    if args.retry is None:
        return cmd_jobs(argparse.Namespace(**{**vars(args), "limit": 200}), failed_only=True)
    import sqlalchemy as sa

    from dj_consumer.clock import SystemClock
    from dj_consumer.schema import delayed_jobs_table
    from dj_consumer.store import Store

    cfg = _config(args)
    store = Store(cfg)
    store.check()
    t = delayed_jobs_table(cfg.table_name)
    now = store.ts(SystemClock().now())
    with store.engine.connect() as conn:
        count = conn.execute(
            sa.update(t).where(t.c.id == args.retry, t.c.failed_at.is_not(None))
            .values(failed_at=None, attempts=0, run_at=now, locked_at=None, locked_by=None,
                    updated_at=now)
        ).rowcount
    store.close()
    if count != 1:
        raise ConfigError(f"no failed row with id {args.retry}")
    print(f"job {args.retry} will run again")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from dj_consumer import schema
    from dj_consumer.store import Store

    cfg = _config(args)
    store = Store(cfg)
    table = schema.delayed_jobs_table(cfg.table_name)
    if args.create:
        schema.create(store.engine, cfg.table_name)
        print(f"table {cfg.table_name} ready")
    else:
        print(str(CreateTable(table).compile(store.engine)).strip() + ";")
        for index in table.indexes:
            print(str(CreateIndex(index).compile(store.engine)).strip() + ";")
    store.close()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from dj_consumer import diagnose
    from dj_consumer.db import unreachable
    from dj_consumer.store import Store

    cfg = _config(args)
    store = Store(cfg)
    try:
        try:
            columns, indexes, skew = diagnose.read_setup(store)
        except SQLAlchemyError as exc:
            raise unreachable(cfg.url, exc) from None
        server = store.check() if columns is not None else None
    except ConfigError as exc:
        if "has no column" not in str(exc):
            raise
        server = None  # advise() reports the missing columns itself
    finally:
        store.close()
    findings = diagnose.advise(cfg, server, columns, indexes, skew)
    print(diagnose.render(findings))
    levels = {f.level for f in findings}
    return 2 if "error" in levels else 1 if "warn" in levels else 0


def cmd_why(args: argparse.Namespace) -> int:
    from dj_consumer import diagnose, job
    from dj_consumer.clock import SystemClock
    from dj_consumer.store import Store

    _import_handlers(args.imports)
    cfg = _config(args)
    store = Store(cfg)
    try:
        store.check()
        row = store.get(args.id)
        last_error = store.last_error(args.id) if row is not None else None
    finally:
        store.close()
    reasons = diagnose.why(row, args.id, cfg, job, SystemClock().now(), last_error)
    if not reasons:
        print(f"job {args.id} is ready: the next poll of a worker with this config runs it")
        return 0
    print(f"job {args.id} is not running because:")
    for reason in reasons:
        print(f"  - {reason}")
    return 1


COMMANDS = {
    "check": cmd_check,
    "why": cmd_why,
    "work": cmd_work,
    "parse": cmd_parse,
    "enqueue": cmd_enqueue,
    "jobs": cmd_jobs,
    "failed": cmd_failed,
    "schema": cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    fmt = args.log_format or os.environ.get("DJ_LOG_FORMAT", "console")
    configure_logging(fmt if fmt in ("console", "json") else "console")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DJConsumerError) as exc:
        print(f"dj-consumer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
