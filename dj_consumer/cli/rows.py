"""`dj-consumer jobs` (list rows) and `dj-consumer failed` (list, show, retry, delete failed rows)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dj_consumer.cli._parser import Parser, add_command
from dj_consumer.cli._run import positive_int
from dj_consumer.errors import ConfigError

if TYPE_CHECKING:
    from dj_consumer.admin import Admin, Filter, Row

STATES = ("all", "ready", "scheduled", "running", "failed")  # admin.STATES


def add(sub: Any) -> None:
    jobs = add_command(sub, "jobs", run_jobs, json=True,
                       help="list rows with filters: id, name, queue, attempts, run_at, state")
    _filters(jobs, state=True)
    jobs.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")

    failed = add_command(
        sub, "failed", run_list, json=True,
        help="failed rows: list, show ID, retry ID…|--all, delete ID…|--all",
        description="Failed rows (failed_at set). Without an action: list them. 'retry' resets "
                    "rows as Rails admins do (attempts 0, failed_at and last_error cleared, "
                    "run_at now); 'delete' removes them. Neither touches a row a live worker "
                    "has locked.")
    _filters(failed)
    failed.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    failed.add_argument("--retry", type=int, metavar="ID", help="same as: failed retry ID")
    actions = failed.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    p = _nested(actions, "list", run_list, "list failed rows, the latest first")
    _filters(p, unset=True)
    p.add_argument("--limit", type=positive_int, default=argparse.SUPPRESS)
    p = _nested(actions, "show", run_show, "one failed row: last_error with its traceback, "
                                          "handler, payload as JSON")
    p.add_argument("id", type=int)
    for name, run, text in (("retry", run_retry, "run failed rows again now"),
                            ("delete", run_delete, "delete failed rows for good")):
        p = _nested(actions, name, run, text)
        p.add_argument("ids", type=int, nargs="*", metavar="ID")
        p.add_argument("--all", action="store_true", help="every failed row the filters match")
        _filters(p, unset=True, since=True)
        if name == "delete":
            p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def _nested(actions: Any, name: str, run: Any, help: str) -> Parser:
    return add_command(actions, name, run, help=help, settings_of="failed", nested=True,
                       json=True)


def _filters(p: argparse.ArgumentParser, *, state: bool = False, unset: bool = False,
             since: bool = True) -> None:
    default: Any = argparse.SUPPRESS if unset else None
    p.add_argument("--name", default=default, help="only this dispatch name (as in @job.run)")
    p.add_argument("--queue", default=default, help="only this queue ('nil': the nil queue)")
    if state:
        p.add_argument("--state", choices=STATES, default="all", help="default all")
    elif since:
        p.add_argument("--since", default=default, metavar="TIME",
                       help="failed at or after: ISO time (UTC) or an age like 90m, 12h, 7d")


# -- jobs ------------------------------------------------------------------------------------


def run_jobs(args: argparse.Namespace) -> int:
    from dj_consumer.admin import Filter

    admin, now, horizon = _admin(args)
    try:
        rows, total = admin.page(Filter(name=args.name, queue=args.queue, state=args.state),
                                 now, horizon, args.limit)
    finally:
        admin.store.close()
    _print_rows(args, rows, total, now, horizon)
    return 0


def _print_rows(args: argparse.Namespace, rows: list[Row], total: int, now: datetime,
                horizon: datetime) -> None:
    from dj_consumer.admin import job_name
    from dj_consumer.cli._out import plural, queue_name, table, when

    if getattr(args, "json", False):
        print(json.dumps({"total": total, "jobs": [_row_json(r, now, horizon) for r in rows]},
                         indent=2, default=str))
        return
    lines = [(r.id, job_name(r.handler)[:40], queue_name(r.queue)[:16], r.priority, r.attempts,
              when(r.run_at), _state(r, now, horizon)) for r in rows]
    print(table(["id", "name", "queue", "pri", "att", "run_at (UTC)", "state"], lines,
                right=(0, 3, 4)))
    print(f"{plural(len(rows), 'row')} shown of {total:,}")


def _state(r: Row, now: datetime, horizon: datetime) -> str:
    from dj_consumer.cli._out import ago

    if r.failed_at is not None:
        first = (r.last_error or "").split("\n", 1)[0][:80]
        return f"failed {r.failed_at:%Y-%m-%d %H:%M:%S}: {first}"
    if r.locked_by is not None and r.locked_at is not None and r.locked_at >= horizon:
        return f"running {ago((now - r.locked_at).total_seconds())} on {r.locked_by}"
    if r.run_at is not None and r.run_at <= now:
        return "ready" if r.attempts == 0 else "ready (retry)"
    return "scheduled" if r.attempts == 0 else "scheduled (retry)"


def _row_json(r: Row, now: datetime, horizon: datetime) -> dict[str, Any]:
    from dj_consumer.admin import job_name

    state = _state(r, now, horizon).split(" ", 1)[0]
    return {"id": r.id, "name": job_name(r.handler), "queue": r.queue, "priority": r.priority,
            "attempts": r.attempts, "run_at": r.run_at, "locked_at": r.locked_at,
            "locked_by": r.locked_by, "failed_at": r.failed_at, "state": state,
            "last_error": (r.last_error or "").split("\n", 1)[0] or None}


# -- failed ----------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    if getattr(args, "retry", None) is not None and args.subcommand is None:
        return _retry_one(args, args.retry)
    admin, now, horizon = _admin(args)
    try:
        rows, total = admin.page(_failed_filter(args, now), now, horizon, args.limit,
                                 latest_failed_first=True)
    finally:
        admin.store.close()
    _print_rows(args, rows, total, now, horizon)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from dj_consumer import ruby_yaml
    from dj_consumer.admin import job_name
    from dj_consumer.cli._out import dumps
    from dj_consumer.errors import HandlerParseError

    admin, now, horizon = _admin(args)
    try:
        row = admin.get(args.id)
    finally:
        admin.store.close()
    if row is None:
        raise ConfigError(f"no row with id {args.id}")
    try:
        payload: Any = ruby_yaml.load(row.handler).payload
    except HandlerParseError as exc:
        payload = {"unparseable": str(exc)}
    out = {**_row_json(row, now, horizon), "name": job_name(row.handler),
           "last_error": row.last_error, "handler": row.handler, "payload": payload}
    if getattr(args, "json", False):
        print(dumps(out))
        return 0
    for key in ("id", "name", "queue", "priority", "attempts", "state", "run_at", "failed_at",
                "locked_by"):
        print(f"{key + ':':<11}{out[key] if out[key] is not None else '-'}")
    print(f"payload:\n{dumps(payload)}\nhandler:\n{row.handler.rstrip()}")
    print(f"last_error:\n{(row.last_error or '-').rstrip()}")
    return 0 if row.failed_at is not None else 1


def run_retry(args: argparse.Namespace) -> int:
    admin, now, horizon = _admin(args)
    try:
        ids = _targets(args, admin, now, horizon)
        done = admin.retry(ids, now, horizon) if ids else 0
    finally:
        admin.store.close()
    print(f"{_jobs(done)} will run again" + _left(len(ids) - done))
    return 0 if done == len(ids) else 1


def run_delete(args: argparse.Namespace) -> int:
    admin, now, horizon = _admin(args)
    try:
        ids = _targets(args, admin, now, horizon)
        if ids and not args.yes and not _confirm(f"delete {_jobs(len(ids))} for good?"):
            print("nothing deleted")
            return 1
        done = admin.delete(ids, horizon) if ids else 0
    finally:
        admin.store.close()
    print(f"{_jobs(done)} deleted" + _left(len(ids) - done))
    return 0 if done == len(ids) else 1


def _retry_one(args: argparse.Namespace, job_id: int) -> int:
    """`failed --retry ID`, the form the README has always shown."""
    admin, now, horizon = _admin(args)
    try:
        done = admin.retry([job_id], now, horizon)
    finally:
        admin.store.close()
    if done != 1:
        raise ConfigError(f"no failed row with id {job_id} (or a live worker has it locked)")
    print(f"job {job_id} will run again")
    return 0


def _targets(args: argparse.Namespace, admin: Admin, now: datetime,
             horizon: datetime) -> list[int]:
    if bool(args.ids) == bool(args.all):
        raise ConfigError(f"failed {args.subcommand}: give row ids, or --all (with --name, "
                          "--queue, --since to narrow it)")
    if args.ids:
        return list(dict.fromkeys(args.ids))
    return admin.ids(_failed_filter(args, now), now, horizon)


def _failed_filter(args: argparse.Namespace, now: datetime) -> Filter:
    from dj_consumer.admin import Filter

    since = getattr(args, "since", None)
    return Filter(name=getattr(args, "name", None), queue=getattr(args, "queue", None),
                  state="failed", since=None if since is None else parse_since(since, now))


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO time (UTC), or an age: 90s, 30m, 12h, 7d."""
    match = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - timedelta(seconds=int(match.group(1)) * unit)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither an ISO time nor an age like 12h") from None
    return value if value.tzinfo is None else (value - value.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]


def _admin(args: argparse.Namespace) -> tuple[Admin, datetime, datetime]:
    from dj_consumer.admin import Admin, horizon
    from dj_consumer.cli._run import store
    from dj_consumer.clock import SystemClock

    st = store(args)
    now = SystemClock().now()
    return Admin(st), now, horizon(now, st.config.max_run_time)


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _jobs(count: int) -> str:
    return "1 job" if count == 1 else f"{count:,} jobs"


def _left(count: int) -> str:
    return "" if count == 0 else (f"; {_jobs(count)} left alone (not failed, gone, or locked "
                                  "by a live worker)")
