"""What every reserve strategy shares: the tools it works with, one reserve's state, the
answer "scan on", and the rows it hands back."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from dj_consumer.config import Config
from dj_consumer.db import Connections
from dj_consumer.errors import HandlerParseError
from dj_consumer.models import JobRow, ParsedHandler
from dj_consumer.run import Deferred, Extra
from dj_consumer.sql import ReserveSQL, Statements

log = structlog.get_logger("dj_consumer.store")

#: After a row claimed before it was parsed turned out not to be ours (a row that began like
#: one of ours but was hand-written YAML; any look-alike under a lock-first strategy), claim
#: nothing before parsing it for this long, so such a row is not locked on every reserve.
SURE_PAUSE = 300.0

#: What `accept` says of a row: its handler parsed (or why it could not be) when we can run
#: it, None when it is not ours.
Verdict = ParsedHandler | HandlerParseError | None
Accept = Callable[[JobRow], Verdict]
Params = dict[str, Any]


class Tools:
    """The connections, the statements (rebuilt when the names we run change), the config,
    and the pause of claims made before parsing; one per Store, shared by its strategies."""

    def __init__(self, db: Connections, config: Config, dialect: str, sql: Statements) -> None:
        self.db, self.config, self.dialect, self.sql = db, config, dialect, sql
        self.mariadb = False
        self._paused_until = 0.0

    def claims_paused(self) -> bool:
        """Must every row be parsed before it is claimed (see pause_claims)?"""
        return time.monotonic() < self._paused_until

    def pause_claims(self, job_id: int, event: str, hint: str) -> None:
        """A row claimed before it was parsed was not ours (handed back already): parse every
        row before claiming it for SURE_PAUSE, so such a row is not locked on every reserve."""
        self._paused_until = time.monotonic() + SURE_PAUSE
        log.warning(event, job_id=job_id, pause_s=SURE_PAUSE, hint=hint)

    def not_ours_after_all(self, job_id: int) -> None:
        self.pause_claims(job_id, "reserve.not_ours_after_all",
                          "its handler begins like Psych's dump of a job of ours but is not one "
                          "(hand-written?); handed back at once. Rows are now parsed before "
                          "they are claimed for a while")


class Done:
    """One try of a reserve: the previous success to delete with it (a run.Deferred),
    whether that happened, and the rows it already tried to claim (and lost to another
    worker). A try that fails is thrown away whole: the next one starts from scratch."""

    __slots__ = ("deleted", "extras", "finished", "id", "tried")

    def __init__(self, finished: Deferred | None, extras: bool = False) -> None:
        self.finished = finished
        self.id = None if finished is None else finished.job.id
        self.deleted: bool | None = None
        self.tried: set[int] = set()
        self.extras = extras  # the strategy sends the success's Extra with its DELETE

    @property
    def extra(self) -> Extra | None:
        """Statements to send right after the success's DELETE (run records), if any."""
        return None if self.finished is None else self.finished.extra

    @property
    def deleting(self) -> int | None:
        """The success still to delete in this reserve (None: none, or deleted already, or
        one whose Extra this strategy cannot send: Store.reserve deletes it with it)."""
        if self.deleted is not None or (self.extra is not None and not self.extras):
            return None
        return self.id


class _Scan(enum.Enum):
    """A strategy's answer when its own statements could not settle the reserve."""

    ON = "scan on"


#: The strategy's row was not ours, or another worker took it first: scan on (scan.py).
SCAN = _Scan.ON
Found = JobRow | _Scan | None


class Reserver:
    """One reserve strategy: `one` locks the next ready row of ours, `many` up to :n."""

    #: Does `one` delete the previous success in its own transaction (one commit per job)?
    folds_deletes = False
    #: ... and send a participant's statements (run.Extra) right after that DELETE?
    folds_extras = False

    def __init__(self, tools: Tools) -> None:
        self.t = tools

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        """The row, None when no ready row is left, or SCAN: the scan must go on."""
        raise NotImplementedError

    def many(self, params: Params, accept: Accept) -> tuple[list[JobRow], bool]:
        """The rows of ours locked, and whether the page read was full (then scan on)."""
        raise NotImplementedError


def to_job(row: Any) -> JobRow:
    handler = row.handler
    if isinstance(handler, bytes | bytearray | memoryview):
        handler = bytes(handler).decode("utf-8", "surrogateescape")
    return JobRow(
        id=int(row.id), priority=int(row.priority), attempts=int(row.attempts),
        handler=handler, run_at=row.run_at, queue=row.queue,
        locked_at=getattr(row, "locked_at", None), locked_by=getattr(row, "locked_by", None),
        failed_at=getattr(row, "failed_at", None),
    )


def locked(job: JobRow, locked_at: datetime, me: str, parsed: Verdict) -> JobRow:
    """The row as we now hold it, with what `accept` made of its handler."""
    return JobRow(id=job.id, priority=job.priority, attempts=job.attempts, handler=job.handler,
                  run_at=job.run_at, queue=job.queue, locked_at=locked_at, locked_by=me,
                  failed_at=None, parsed=parsed)
