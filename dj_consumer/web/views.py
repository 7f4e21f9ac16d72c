"""What the pages show, as plain values for the templates: a row's state, a job's details
(payload as dj_consumer parses it, why it is not running, its run record and schedule), and
whether a run record is worth asking for again. No SQL here: rows come from dj_consumer.admin,
records and schedules from web/records.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dj_consumer import diagnose, ruby_yaml
from dj_consumer.admin import Row, job_name
from dj_consumer.cli._out import ago, dumps
from dj_consumer.config import Config
from dj_consumer.errors import HandlerParseError
from dj_consumer.models import JobRow
from dj_consumer.registry import Registry
from dj_consumer.runs.records import Run
from dj_consumer.scheduling import ScheduleRow

#: Characters of a handler or last_error a job page shows (the rest is counted, not sent).
SHOWN = 256 * 1024


def state_of(r: Row, now: datetime, horizon: datetime) -> tuple[str, str]:
    """(state, detail): failed, running, ready or scheduled, as `dj-consumer jobs` says."""
    if r.failed_at is not None:
        return "failed", f"at {r.failed_at:%Y-%m-%d %H:%M:%S}"
    if r.locked_by is not None and r.locked_at is not None and r.locked_at >= horizon:
        return "running", f"{ago((now - r.locked_at).total_seconds())} on {r.locked_by}"
    retry = " (retry)" if r.attempts else ""
    if r.run_at is not None and r.run_at <= now:
        return "ready", f"waiting {ago((now - r.run_at).total_seconds())}{retry}"
    wait = "" if r.run_at is None else f"in {ago((r.run_at - now).total_seconds())}"
    return "scheduled", wait + retry


def first_line(text: str | None) -> str:
    return (text or "").split("\n", 1)[0][:200]


@dataclass(frozen=True)
class Shown:
    """A long text cut to SHOWN characters, with how many were left out."""

    text: str
    left_out: int

    @classmethod
    def of(cls, text: str | None) -> Shown:
        text = text or ""
        return cls(text[:SHOWN], max(0, len(text) - SHOWN))


@dataclass(frozen=True)
class JobPage:
    row: Row
    name: str
    display_name: str | None
    state: tuple[str, str]
    payload_json: str | None
    parse_error: str | None
    reasons: list[str]
    handler: Shown
    last_error: Shown
    run: Run | None  # None: no record yet, or no runs table
    schedule: ScheduleRow | None  # None: not a recurring row


def job_page(row: Row, cfg: Config, registry: Registry, now: datetime, horizon: datetime, *,
             run: Run | None = None, schedule: ScheduleRow | None = None) -> JobPage:
    """Everything the job page shows about one whole row (admin.get)."""
    try:
        parsed = ruby_yaml.load(row.handler, max_bytes=cfg.max_handler_bytes,
                                max_values=cfg.max_handler_values)
        name, display, payload, error = parsed.name, parsed.display_name, dumps(parsed.payload), None
    except HandlerParseError as exc:
        name, display, payload, error = job_name(row.handler), None, None, str(exc)
    job = JobRow(id=row.id, priority=row.priority, attempts=row.attempts, handler=row.handler,
                 run_at=row.run_at, queue=row.queue, locked_at=row.locked_at,
                 locked_by=row.locked_by, failed_at=row.failed_at)
    reasons = diagnose.why(job, row.id, cfg, registry, now, row.last_error)
    return JobPage(row, name, display, state_of(row, now, horizon), payload, error, reasons,
                   Shown.of(row.handler), Shown.of(row.last_error), run, schedule)


#: Seconds between two reads of a run record on an open job page: while it runs, and while it
#: has not started (or will run again).
POLL_RUNNING, POLL_WAITING = 1, 3


def run_poll(row: Row | None, run: Run | None, has_runs: bool) -> int | None:
    """Seconds until the job page asks for the run record again; None: it will not change
    (no runs table, the row gone or failed for good). A final record beside a live row is
    asked for too: the row will run again (retried, or a cron row), and start a new record."""
    if not has_runs or row is None or row.failed_at is not None:
        return None
    return POLL_RUNNING if run is not None and run.state == "running" else POLL_WAITING
