"""`dj-consumer schedule NAME --every 3h | --cron '...'` and `dj-consumer schedules`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dj_consumer.cli._parser import add_command

SHAPES = ("object", "struct", "active_job")


def add(sub: Any) -> None:
    p = add_command(
        sub, "schedule", run_schedule, imports=True, json=True,
        help="create a recurring row (cron or every), once per name and payload",
        description="Insert a recurring job Ruby can run too: --cron writes delayed_cron_job's "
                    "cron column (run_at = its next time), --every the delayed_job fork's "
                    "reoccur_in (whole seconds; 3h, 90m, 10800 or PT3H; runs now, then every "
                    "interval). Scheduling the same name and payload again (each deploy) finds "
                    "the row and updates its expression or interval instead of adding one "
                    "(--no-unique adds one anyway). docs/recurring.md.")
    p.add_argument("name", help="Ruby class name, e.g. NightlyReportJob")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", metavar="INTERVAL", help="3h, 90m, 1d, 10800 or PT3H")
    when.add_argument("--cron", metavar="EXPR",
                      help="5 or 6 fields as Fugit reads them, optional zone suffix: "
                           "'0 9 * * 1-5 Europe/Berlin'")
    p.add_argument("--payload", default=None, metavar="JSON",
                   help="JSON text, @FILE or - for stdin (attributes for object/struct, the "
                        "argument list for active_job)")
    p.add_argument("--as", dest="shape", choices=SHAPES, default="object",
                   help="handler shape (default object)")
    p.add_argument("--queue", help="queue name (default: the handler's @job.run queue=)")
    p.add_argument("--priority", type=int, default=None, help="default 0")
    p.add_argument("--unique", action=argparse.BooleanOptionalAction, default=True,
                   help="one row per name and payload (default)")
    add_command(
        sub, "schedules", run_schedules, json=True,
        help="list recurring rows: schedule, next run, last run, state",
        description="Every row with cron or reoccur_in set, by next run: its expression or "
                    "interval, next run (run_at), last run (last_run_at; for cron rows the "
                    "time of the last write after a run), runs so far (cron: attempts), and "
                    "whether it runs now, failed, or last failed.")


def run_schedule(args: argparse.Namespace) -> int:
    from dj_consumer.cli._out import when
    from dj_consumer.cli._run import import_handlers, registry, store
    from dj_consumer.cli.handlers import _json_arg
    from dj_consumer.scheduling import schedule

    payload = _json_arg("--payload", args.payload)
    import_handlers(args.imports)
    st = store(args)
    try:
        done = schedule(st.config, args.name, payload, every=args.every, cron=args.cron,
                        queue=args.queue, priority=args.priority, shape=args.shape,
                        unique=args.unique, store=st, registry=registry())
    finally:
        st.close()
    what = "created" if done.created else "updated" if done.changed else "unchanged"
    if args.json:
        print(json.dumps({"id": done.id, "result": what, "cron": done.cron, "every": done.every,
                          "next_run": when(done.run_at) if done.run_at else None,
                          "failed": done.failed}))
        return 0
    rule = f"cron {done.cron!r}" if done.cron else f"every {done.every}s"
    print(f"{what} {done.id} {args.name}: {rule}, next run {when(done.run_at)} UTC")
    if done.failed:
        print(f"warning: row {done.id} is failed (failed_at set) and does not run; "
              f"`dj-consumer failed retry {done.id}` brings it back")
    return 0


def run_schedules(args: argparse.Namespace) -> int:
    from dj_consumer.cli._out import table, when
    from dj_consumer.cli._run import store
    from dj_consumer.scheduling import schedules

    st = store(args)
    try:
        rows = schedules(st.config, store=st)
    finally:
        st.close()
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
        return 0
    if not rows:
        print("no recurring rows")
        return 0
    out = []
    for r in rows:
        state = ("failed" if r.failed_at else f"running ({r.running})" if r.running
                 else "last run failed" if r.last_error else "ok")
        out.append([r.id, r.name, r.queue or "nil", f"cron {r.cron}" if r.cron else
                    f"every {r.every}s", when(r.next_run), when(r.last_run),
                    "-" if r.runs is None else r.runs, state])
    print(table(["id", "name", "queue", "schedule", "next run (UTC)", "last run", "runs",
                 "state"], out, right=(0, 6)))
    return 0
