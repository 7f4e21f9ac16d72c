"""`dj-consumer parse` (how does a handler read?) and `dj-consumer enqueue` (write one Ruby reads)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dj_consumer.cli._parser import add_command
from dj_consumer.errors import ConfigError

SHAPES = ("object", "struct", "active_job")  # ruby_yaml.SHAPES, without importing it here


def add(sub: Any) -> None:
    p = add_command(
        sub, "parse", run_parse, imports=True,
        help="show how a handler parses: name, display_name, payload as JSON",
        description="Parse a handler (a file, stdin, or --id N from the table) and print its "
                    "dispatch name, Ruby display name and payload: the tool for 'why is my "
                    "job not picked up?'. The name must equal a @job.run name.")
    p.add_argument("file", nargs="?", help="a file holding the handler YAML; - for stdin")
    p.add_argument("--id", type=int, help="read the handler of this row from the table")

    p = add_command(
        sub, "enqueue", run_enqueue, imports=True, json=True,
        help="insert a job whose handler Ruby can load too",
        description="Insert a job as Ruby would. --as object/struct: the payload is the "
                    "object's attributes (a JSON object). --as active_job: what Rails' "
                    "DelayedJobAdapter writes for Job.perform_later(*args): the payload is "
                    "the argument list (a JSON array), --kwargs the keyword arguments; queue "
                    "column and job_data.queue_name agree (default 'default'). Prints the new "
                    "id and the name Ruby gives the job (Delayed::Job#name).")
    p.add_argument("name", help="Ruby class name, e.g. NewsletterJob")
    p.add_argument("--payload", default=None, metavar="JSON",
                   help="JSON text, @FILE to read it from a file, or - for stdin "
                        "(default {} for object/struct, [] for active_job)")
    p.add_argument("--kwargs", default=None, metavar="JSON",
                   help="active_job keyword arguments, a JSON object (perform_later(**kwargs))")
    p.add_argument("--as", dest="shape", choices=SHAPES, default="object",
                   help="handler shape (default object)")
    p.add_argument("--queue", help="queue name (default: the handler's @job.run queue=, nil; "
                                   "'default' for active_job)")
    p.add_argument("--priority", type=int, default=None, help="default 0")
    p.add_argument("--run-at", metavar="ISO-TIME", help="UTC, e.g. 2026-01-01T12:00:00")


def run_parse(args: argparse.Namespace) -> int:
    from dj_consumer import ruby_yaml
    from dj_consumer.cli._out import dumps
    from dj_consumer.errors import HandlerParseError

    if args.imports:
        from dj_consumer.cli._run import import_handlers

        import_handlers(args.imports)
    handler = _handler_from(args)
    try:
        parsed = ruby_yaml.load(handler)
    except HandlerParseError as exc:
        print(dumps({"error": str(exc), "fallback_name": ruby_yaml.fallback_name(handler)}))
        return 1
    out: dict[str, Any] = {"name": parsed.name, "display_name": parsed.display_name,
                           "payload": parsed.payload}
    if args.imports:
        from dj_consumer.cli._run import registry

        out["registered"] = parsed.name in registry()
    print(dumps(out))
    return 0


def _handler_from(args: argparse.Namespace) -> str:
    if args.id is not None:
        from dj_consumer.cli._run import store

        st = store(args)
        try:
            row = st.get(args.id)
        finally:
            st.close()
        if row is None:
            raise ConfigError(f"no row with id {args.id}")
        return row.handler
    if args.file in (None, "-"):
        return sys.stdin.read()
    return Path(args.file).read_text(encoding="utf-8", errors="surrogateescape")


def run_enqueue(args: argparse.Namespace) -> int:
    from datetime import datetime

    from dj_consumer import ruby_yaml
    from dj_consumer.cli._run import import_handlers, registry, store
    from dj_consumer.enqueue import insert, new_job

    payload = _json_arg("--payload", args.payload)
    kwargs = _json_arg("--kwargs", args.kwargs)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError("--kwargs must be a JSON object of keyword arguments")
    run_at = None
    if args.run_at:
        try:
            run_at = datetime.fromisoformat(args.run_at)
        except ValueError:
            raise ConfigError(f"--run-at {args.run_at!r} is not an ISO time") from None
    import_handlers(args.imports)
    spec = registry().spec(args.name)
    queue = args.queue if args.queue is not None else (spec.queue if spec else None)
    job = new_job(args.name, payload, shape=args.shape, queue=queue, priority=args.priority,
                  kwargs=kwargs)
    st = store(args)
    try:
        _fits(st, job.handler, job.queue)
        job_id = insert(st, job, run_at=run_at)
    finally:
        st.close()
    name = ruby_yaml.load(job.handler).display_name
    if args.json:
        print(json.dumps({"id": job_id, "name": name, "queue": job.queue,
                          "priority": job.priority}))
    else:
        print(f"{job_id} {name}")
    return 0


def _json_arg(flag: str, raw: str | None) -> Any:
    if raw is None:
        return None
    if raw == "-":
        raw = sys.stdin.read()
    elif raw.startswith("@"):
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} is not JSON: {exc}") from None


def _fits(st: Any, handler: str, queue: str | None) -> None:
    """Refuse, naming the column and its limit, what the database would truncate or refuse."""
    from dj_consumer.admin import Admin

    limits = Admin(st).column_limits()
    checks = [("queue", len(queue or ""), "characters"),
              ("handler", len(handler.encode("utf-8")), "bytes")]
    for column, size, unit in checks:
        limit = limits.get(column)
        if limit is not None and size > limit[0]:
            raise ConfigError(f"the {column} is {size:,} {unit}; column {column} "
                              f"({limit[1]}) holds at most {limit[0]:,} {unit}")
