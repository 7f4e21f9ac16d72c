"""`dj-consumer runs` (list run records, show one) and `dj-consumer cancel ID`."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dj_consumer.cli._parser import Parser, add_command
from dj_consumer.cli._run import positive_int

if TYPE_CHECKING:
    from dj_consumer.runs import Run, Runs

STATES = ("running", "succeeded", "rescheduled", "failed", "cancelled", "interrupted")


def add(sub: Any) -> None:
    p = add_command(
        sub, "runs", run_list, json=True,
        help="run records (state, progress, result): list with filters, show ID",
        description="The run records table (docs/runs.md 'Job runs'): one record per job a worker "
                    "started or a cancel touched, the latest first.")
    _filters(p)
    actions = p.add_subparsers(dest="subcommand", metavar="ACTION", parser_class=Parser)
    nested = add_command(actions, "list", run_list, help="list run records, the latest first",
                         settings_of="runs", nested=True, json=True)
    _filters(nested, unset=True)
    show = add_command(actions, "show", run_show, help="one run record, result as JSON",
                       settings_of="runs", nested=True, json=True)
    show.add_argument("id", type=int)

    p = add_command(
        sub, "cancel", run_cancel, json=True,
        help="cancel a job: delete it while it waits, or ask its worker to stop it",
        description="A waiting job (not locked by a live worker) is deleted — with --keep, "
                    "failed with last_error 'cancelled' — and its run record says cancelled. "
                    "A running job's run record gets cancel_requested_at; its handler sees "
                    "j.cancelled. Exit 0 when done or requested, 1 otherwise.")
    p.add_argument("id", type=int)
    p.add_argument("--keep", action="store_true",
                   help="keep the row, failed with last_error 'cancelled', instead of deleting it")


def _filters(p: argparse.ArgumentParser, *, unset: bool = False) -> None:
    default: Any = argparse.SUPPRESS if unset else None
    p.add_argument("--state", choices=STATES, default=default, help="only this state")
    p.add_argument("--name", default=default, help="only this dispatch name")
    p.add_argument("--run-key", default=default, help="only this run_key")
    p.add_argument("--owner-id", default=default, help="only this owner_id")
    p.add_argument("--limit", type=positive_int, default=argparse.SUPPRESS if unset else 50,
                   help="records to show (default 50)")


def _client(args: argparse.Namespace) -> Runs:
    from dj_consumer.cli._run import config
    from dj_consumer.runs import Runs

    return Runs(config(args))


def run_list(args: argparse.Namespace) -> int:
    from dj_consumer.cli._out import table, when

    client = _client(args)
    try:
        found = client.find(state=args.state, name=args.name, run_key=args.run_key,
                            owner_id=args.owner_id, limit=args.limit)
    finally:
        client.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in found], indent=2, ensure_ascii=False))
        return 0
    lines = [(r.job_id, r.name[:40], r.state, r.attempts, _progress(r), when(r.updated_at),
              _note(r)) for r in found]
    print(table(["job", "name", "state", "att", "progress", "updated (UTC)", "note"], lines,
                right=(0, 3)))
    print(f"{len(found):,} record{'' if len(found) == 1 else 's'}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import sys

    from dj_consumer.cli._out import when

    client = _client(args)
    try:
        run = client.get(args.id)
    finally:
        client.close()
    if run is None:
        print(f"no run record for job {args.id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(run.as_dict(), indent=2, ensure_ascii=False))
        return 0
    fields = [("job", run.job_id), ("name", run.name), ("queue", run.queue or "nil"),
              ("state", run.state), ("attempts", run.attempts), ("progress", _progress(r=run)),
              ("run_key", run.run_key), ("owner_id", run.owner_id),
              ("batch", f"{run.batch_id} #{run.batch_index}" if run.batch_id else None),
              ("locked_by", run.locked_by), ("started_at", when(run.started_at)),
              ("finished_at", when(run.finished_at)), ("updated_at", when(run.updated_at)),
              ("cancel_requested_at", when(run.cancel_requested_at)
               if run.cancel_requested_at else None),
              ("error", f"{run.error_class + ': ' if run.error_class else ''}"
                        f"{run.error_message}" if run.error_message else None)]
    for key, value in fields:
        if value is not None and value != "":
            print(f"{key + ':':21}{value}")
    if run.result is not None:
        print("result:")
        print(json.dumps(run.result, indent=2, ensure_ascii=False))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        done = client.cancel(args.id, keep=args.keep)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"job_id": done.job_id, "outcome": done.outcome,
                          "message": done.message}, indent=2))
    else:
        print(done.message)
    return 0 if done.done else 1


def _progress(r: Run) -> str:
    if r.progress_current is None:
        return "-"
    total = f"/{r.progress_total}" if r.progress_total is not None else ""
    return f"{r.progress_current}{total}"


def _note(r: Run) -> str:
    if r.error_message:
        return r.error_message.split("\n", 1)[0][:60]
    if r.cancel_requested_at is not None and not r.finished:
        return "cancel requested"
    return r.progress_stage or ""
