"""`dj-consumer status`: the table at a glance, per queue and job name, and who holds locks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dj_consumer.cli._parser import add_command

if TYPE_CHECKING:
    from dj_consumer.admin import NameStatus


def add(sub: Any) -> None:
    p = add_command(
        sub, "status", run, imports=True, json=True,
        help="per queue and job name: ready, scheduled, running, failed, oldest ready; "
             "which names Python runs; which workers hold locks",
        description="One screen about the table: for each queue and job name the ready rows "
                    "(and how long the oldest has waited: the number to alert on), scheduled "
                    "(run_at in the future), running (locked, lock younger than max_run_time), "
                    "failed; whether the --import modules register a Python handler for the "
                    "name (else only Ruby runs it); and which workers hold locks, since when. "
                    "One pass over the table (docs/commands.md 'dj-consumer status').")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="S",
                   help="refresh in place every S seconds (default 2) until Ctrl-C")


def run(args: argparse.Namespace) -> int:
    from dj_consumer.admin import Admin, horizon
    from dj_consumer.cli._run import import_handlers, registry, store
    from dj_consumer.clock import SystemClock

    import_handlers(args.imports)
    st = store(args)
    admin = Admin(st)
    try:
        while True:
            now = SystemClock().now()
            started = time.monotonic()
            lines = admin.status(now, horizon(now, st.config.max_run_time))
            took = time.monotonic() - started
            python = set(registry().names())
            text = (json.dumps(as_json(lines, python, now, took), indent=2, default=str)
                    if args.json else render(lines, python, now, took))
            if args.watch is None:
                print(text)
                return 0
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")  # home, clear: refresh in place
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:  # how --watch ends
        return 0
    finally:
        st.close()


def render(lines: list[NameStatus], python: set[str], now: datetime, took: float) -> str:
    from dj_consumer.cli._out import ago, queue_name, table

    rows = [(queue_name(s.queue), s.name, "python" if s.name in python else "ruby only",
             f"{s.ready:,}", _age(s.oldest_ready, now), f"{s.scheduled:,}", f"{s.running:,}",
             f"{s.failed:,}") for s in lines]
    out = [table(["queue", "name", "runs in", "ready", "oldest ready", "scheduled", "running",
                  "failed"], rows, right=(3, 4, 5, 6, 7))]
    totals = [sum(getattr(s, k) for s in lines) for k in ("ready", "scheduled", "running",
                                                          "failed")]
    out.append(f"total: {totals[0]:,} ready, {totals[1]:,} scheduled, {totals[2]:,} running, "
               f"{totals[3]:,} failed  ({now:%Y-%m-%d %H:%M:%S} UTC, read in {took:.2f}s)")
    holders = _holders(lines)
    if holders:
        out.append("\nlocks held (live):")
        out.append(table(["worker", "jobs", "oldest lock", "age"],
                         [(who, f"{n:,}", f"{since:%Y-%m-%d %H:%M:%S}" if since else "-",
                           ago((now - since).total_seconds()) if since else "-")
                          for who, (n, since) in holders.items()], right=(1,)))
    if not python:
        out.append("\n(no --import given: every name shows as 'ruby only')")
    return "\n".join(out)


def as_json(lines: list[NameStatus], python: set[str], now: datetime,
            took: float) -> dict[str, Any]:
    holders = _holders(lines)
    return {
        "now": now, "seconds": round(took, 3),
        "names": [{"queue": s.queue, "name": s.name, "python": s.name in python,
                   "ready": s.ready, "scheduled": s.scheduled, "running": s.running,
                   "failed": s.failed, "oldest_ready": s.oldest_ready,
                   "oldest_ready_age_s": _seconds(s.oldest_ready, now)} for s in lines],
        "workers": [{"locked_by": who, "jobs": n, "since": since,
                     "age_s": _seconds(since, now)} for who, (n, since) in holders.items()],
    }


def _holders(lines: list[NameStatus]) -> dict[str, tuple[int, datetime | None]]:
    merged: dict[str, tuple[int, datetime | None]] = {}
    for s in lines:
        for who, (n, since) in s.holders.items():
            count, first = merged.get(who, (0, None))
            merged[who] = (count + n, since if first is None or (since and since < first)
                           else first)
    return dict(sorted(merged.items()))


def _age(value: datetime | None, now: datetime) -> str:
    from dj_consumer.cli._out import ago

    return "-" if value is None else ago((now - value).total_seconds())


def _seconds(value: datetime | None, now: datetime) -> float | None:
    return None if value is None else round((now - value).total_seconds(), 1)
