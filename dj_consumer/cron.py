"""Recurring rows: when a `cron` row or a `reoccur_in` row runs next.

`parse(expr)` reads a cron expression the way delayed_cron_job 0.9.0 does through Fugit
(5 fields, or 6 with seconds first; Fugit's @-names; an optional zone suffix such as
`0 9 * * * America/New_York`), and `Schedule.next_after(t)` is Fugit's `next_time(t)`: the
first matching whole second strictly after `t`, the fields matched against the wall clock
of the zone at real instants (a time the clocks skip never runs, one they repeat runs
twice). docs/recurring.md says where this and Fugit differ.

`parse_interval` reads a `reoccur_in` value (seconds as Ruby writes them, "10800", or
ISO-8601 "PT3H"), and `next_reoccurrence` advances a row's `run_at` by whole intervals past
now: no drift, and no burst of catch-up runs after downtime.

Times in and out are naive UTC datetimes, as the delayed_jobs table holds them. Evaluating
cron expressions needs the optional `cronsim` package (`pip install 'dj_consumer[cron]'`);
intervals do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from dj_consumer._cron_syntax import Fields, SyntaxProblem, parse_fields
from dj_consumer.errors import DJConsumerError

if TYPE_CHECKING:
    from cronsim import CronSim

__all__ = [
    "CronError",
    "CronUnavailable",
    "IntervalError",
    "Schedule",
    "next_reoccurrence",
    "parse",
    "parse_interval",
]


class CronError(DJConsumerError):
    """The cron expression is not one delayed_cron_job (Fugit) runs."""


class CronUnavailable(DJConsumerError):
    """Cron expressions need the cronsim package: pip install 'dj_consumer[cron]'."""


class IntervalError(DJConsumerError):
    """The reoccur_in interval is not a positive duration."""


@dataclass(frozen=True)
class Schedule:
    """A parsed cron expression: `next_after(t)` is when it runs next after `t`."""

    expr: str
    fields: Fields
    zone: tzinfo

    def next_after(self, after: datetime) -> datetime:
        """The first run time strictly after `after` (naive UTC, or aware), as naive UTC."""
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        try:
            found = next(_cronsim()(self.fields.cronsim(), after.astimezone(self.zone)))
        except (StopIteration, OverflowError):  # cronsim looks 50 years ahead, datetime to 9999
            raise CronError(f"cron {self.expr!r} has no run time in the 50 years after "
                            f"{after:%Y-%m-%d %H:%M:%S}") from None
        return found.astimezone(UTC).replace(tzinfo=None)


def parse(expr: str, *, default_zone: str | tzinfo = "UTC") -> Schedule:
    """Check `expr` and return its Schedule; a CronError says in one line what is wrong.

    `default_zone` is the zone for an expression without a suffix. Fugit uses the Ruby
    worker process's local zone there (its TZ), not Rails' config.time_zone; servers
    usually run in UTC.
    """
    if not isinstance(expr, str):
        raise CronError(f"cron expression must be a string, not {type(expr).__name__}")
    try:
        fields = parse_fields(expr)
    except SyntaxProblem as problem:
        raise CronError(f"invalid cron expression {expr!r}: {problem}") from None
    zone = fields.zone or _default(default_zone)
    schedule = Schedule(expr, fields, zone)
    _cronsim()  # a missing extra is reported when the schedule is made, not when it runs
    return schedule


def _default(zone: str | tzinfo) -> tzinfo:
    if not isinstance(zone, str):
        return zone
    try:
        return ZoneInfo(zone)
    except (KeyError, ValueError, OSError):
        raise CronError(f"unknown default time zone {zone!r}") from None


def _cronsim() -> type[CronSim]:
    try:
        from cronsim import CronSim
    except ImportError:
        raise CronUnavailable() from None
    return CronSim


# --- reoccur_in -------------------------------------------------------------------------

_ISO = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d+)?)S)?)?",
    re.IGNORECASE,
)
# The seed fork also stores these calendar rules in reoccur_in (Delayed::Job.schedule
# job, every: :last_of_month); see docs/recurring.md.
_FORK_RULES = ("first_of_month", "last_of_month", "first_of_year", "last_of_year")


def parse_interval(value: str | int | float | timedelta) -> timedelta:
    """A `reoccur_in` value as a positive timedelta.

    Ruby writes whole seconds as a string ("10800" for 3.hours); ISO-8601 durations
    ("PT3H", "P1DT12H", "P1W") are accepted too, without years or months, which have no
    fixed length. An IntervalError says in one line what is wrong.
    """
    interval = _interval(value)
    if interval <= timedelta(0):
        raise IntervalError(f"reoccur_in {value!r} is not a positive interval")
    return interval


def _interval(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise IntervalError(f"reoccur_in must be seconds or an ISO-8601 duration, not "
                            f"{type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    if text in _FORK_RULES:
        raise IntervalError(f"reoccur_in {text!r} is a calendar rule of the delayed_job fork, "
                            "not an interval; dj_consumer does not run it")
    m = _ISO.fullmatch(text)
    if not m or text.upper() in ("P", "PT") or text.upper().endswith("T"):
        raise IntervalError(f"reoccur_in {value!r} is neither whole seconds (\"10800\") nor an "
                            "ISO-8601 duration (\"PT3H\")")
    if m["years"] or m["months"]:
        raise IntervalError(f"reoccur_in {value!r} has years or months, which have no fixed "
                            "length; use days (P30D)")
    return timedelta(
        weeks=int(m["weeks"] or 0), days=int(m["days"] or 0), hours=int(m["hours"] or 0),
        minutes=int(m["minutes"] or 0), seconds=float((m["seconds"] or "0").replace(",", ".")),
    )


def next_reoccurrence(run_at: datetime, interval: timedelta, now: datetime) -> datetime:
    """The first slot run_at + k·interval (k >= 1) strictly after `now`.

    Slots stay on run_at's grid however late a run started (no drift), and a row that was
    down for ten intervals runs once, at the next slot, not ten times (no burst).
    """
    if interval <= timedelta(0):
        raise IntervalError(f"interval {interval} is not positive")
    steps = max(1, (now - run_at) // interval + 1)
    return run_at + steps * interval
