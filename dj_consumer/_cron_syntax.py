"""Fugit 1.5.2's cron grammar, read the way Fugit reads it, and rewritten for cronsim.

A `cron` column is written by Ruby (delayed_cron_job → `Fugit::Cron.do_parse`), so what it
means is what Fugit makes of it, odd corners included. This module follows
fugit-1.5.2/lib/fugit/cron.rb: the element grammar (Parser, l.623-808), `expand`/`range`
(l.497-553), the weekday rules (l.593-616), and `compact_month_days` (l.436-450). The result
is explicit value sets, rendered as a six-field expression for cronsim: explicit lists keep
cronsim's Debian "a field starting with * means AND" rule out of the way (Fugit ORs the two
day fields whenever both are restricted), and six fields keep its Debian DST adjustment out
(Fugit matches wall-clock times at real instants: a skipped time never runs, a repeated one
runs twice).

Fugit syntax cronsim cannot express (negative days other than L, `#-2`.., `%` weekdays) is
refused with a message saying so; the refusal is ours, not Fugit's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

# Fugit's own @-names (cron.rb l.7-16); "@reboot" maps to no cron at all, so it is invalid.
SPECIALS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@noon": "0 12 * * *", "@hourly": "0 * * * *",
}
MAXDAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

# One value of each field, as Fugit's regexes take it (ordered alternatives, first wins).
_VALUE = {
    "second": r"[0-5]?\d", "minute": r"[0-5]?\d", "hour": r"2[0-4]|[01]?[0-9]",
    "day": r"-?(?:3[01]|[12][0-9]|0?[1-9])|last|l",
    "month": r"1[0-2]|0?[1-9]|" + "|".join(MONTHS), "weekday": r"[0-7]|" + "|".join(WEEKDAYS),
}
_BOUNDS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12)}
_TZ_NAME = re.compile(r"[A-Z][a-zA-Z0-9+\-]+(?:/[A-Z][a-zA-Z0-9+\-_]+){0,2}")
_TZ_DELTA = re.compile(r"([-+])([01][0-9]|2[0-4]):?(00|15|30|45)")
_HINTS = (  # syntax other crons take and Fugit does not, with what to write instead
    (re.compile(r"^\d+L$", re.I), "is Quartz syntax; Fugit writes the last Friday as fri#L"),
    (re.compile(r"W$", re.I), "(nearest weekday) is not Fugit syntax"),
    (re.compile(r"^\?$"), "is Quartz syntax; write *"),
)

Weekday = tuple[int, int | None]  # (0-6, nth in month: 1..5 from the start, -1..-5 from the end)


class SyntaxProblem(ValueError):
    """Why an expression is not one Fugit (or dj_consumer) takes; a fragment of one line."""


@dataclass(frozen=True)
class Fields:
    """What a cron expression means: each field's values, None where unrestricted."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...] | None
    hours: tuple[int, ...] | None
    days: tuple[int, ...] | None  # 1..31, or -1 for the last day (Fugit's L)
    months: tuple[int, ...] | None
    weekdays: tuple[Weekday, ...] | None
    zone: tzinfo | None  # None: the caller's default zone

    def cronsim(self) -> str:
        """Six fields for cronsim, every restricted field an explicit list."""

        def plain(values: tuple[int, ...] | None) -> str:
            return "*" if values is None else ",".join(map(str, values))

        days = None if self.days is None else ",".join("L" if d == -1 else str(d) for d in self.days)
        weekdays = None if self.weekdays is None else ",".join(
            str(d) if n is None else f"{d}L" if n == -1 else f"{d}#{n}" for d, n in self.weekdays
        )
        return " ".join((plain(self.seconds), plain(self.minutes), plain(self.hours),
                         days or "*", plain(self.months), weekdays or "*"))


def parse_fields(expr: str) -> Fields:
    """The meaning of `expr` (surrounding whitespace ignored, as Fugit >= 1.6 does)."""
    text = SPECIALS.get(expr.strip(), expr.strip())
    if text.startswith("@"):
        name = text.split()[0]
        if name in SPECIALS:  # Fugit >= 1.11.2 takes "@daily Europe/Berlin", 1.5.2 does not
            raise SyntaxProblem(f"{name} takes no time zone; write {SPECIALS[name]} and the zone")
        raise SyntaxProblem(f"{name} is not one of Fugit's names: " + " ".join(SPECIALS))
    tokens = re.split(r"[ \t]+", text)
    if len(tokens) == 5:
        return _fields(tokens, None)
    if len(tokens) == 6:
        try:  # Fugit tries six fields (seconds first) before five fields and a zone
            return _fields(tokens, None)
        except SyntaxProblem as six:
            if not _looks_like_zone(tokens[-1]):
                raise six from None
    if len(tokens) in (6, 7):
        gap = re.search(r"[ \t]+$", text[: len(text) - len(tokens[-1])])
        if gap and "\t" in gap.group():
            raise SyntaxProblem("the time zone must follow spaces, not a tab")
        return _fields(tokens[:-1], _zone(tokens[-1]))
    raise SyntaxProblem(f"expected 5 or 6 fields (6 = seconds first) and an optional time zone, "
                        f"got {len(tokens)} parts")


def _looks_like_zone(token: str) -> bool:
    return bool(_TZ_NAME.fullmatch(token) or _TZ_DELTA.fullmatch(token))


def _zone(token: str) -> tzinfo:
    delta = _TZ_DELTA.fullmatch(token)
    if delta:
        sign, hours, minutes = delta.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        if offset >= timedelta(hours=24):
            raise SyntaxProblem(f"time zone offset {token} is a day or more")
        return timezone(-offset if sign == "-" else offset)
    if not _TZ_NAME.fullmatch(token):
        raise SyntaxProblem(f"{token!r} is not a time zone (e.g. Europe/Berlin, UTC, +05:30)")
    try:
        return ZoneInfo(token)
    except (KeyError, ValueError, OSError):
        raise SyntaxProblem(f"unknown time zone {token!r}") from None


def _fields(tokens: Sequence[str], zone: tzinfo | None) -> Fields:
    if len(tokens) == 5:
        tokens = ["0", *tokens]
    sec, minute, hour, day, month, weekday = tokens
    seconds = _numbers("second", sec)
    hours = _numbers("hour", hour)
    fields = Fields(
        seconds=seconds if seconds is not None else tuple(range(60)),
        minutes=_numbers("minute", minute),
        hours=None if hours is None else tuple(sorted({0 if h == 24 else h for h in hours})),
        days=_numbers("day", day),
        months=_numbers("month", month),
        weekdays=_weekdays(weekday),
        zone=zone,
    )
    return _compact_month_days(fields)


def _element(field: str, text: str) -> tuple[int | None, int | None, int | None]:
    """(start, end, step) of one list element: "*", "a", "a-b", each with an optional "/n"."""
    if not text:
        raise SyntaxProblem(f"{field} field has an empty list element (a stray comma?)")
    value = _VALUE[field]
    m = re.fullmatch(rf"(?:(\*)|({value})(?:-({value}))?)?(?:/(\d\d?))?", text, re.I)
    if not m or not (m.group(1) or m.group(2) or m.group(4)):
        for pattern, hint in _HINTS:
            if pattern.search(text):
                raise SyntaxProblem(f"{field} field {text!r} {hint}")
        raise SyntaxProblem(f"{field} field {text!r} is not valid")
    step = int(m.group(4)) if m.group(4) else None
    return _bound(field, m.group(2)), _bound(field, m.group(3)), step


def _bound(field: str, text: str | None) -> int | None:
    if text is None:
        return None
    low = text.lower()
    if field == "month" and low in MONTHS:
        return MONTHS.index(low) + 1
    if field == "weekday" and low in WEEKDAYS:
        return WEEKDAYS.index(low)
    if field == "day" and low.startswith("l"):
        return -1
    return int(text)


def _numbers(field: str, text: str) -> tuple[int, ...] | None:
    """A list field's values (fugit cron.rb `expand`, `range`, `compact`), None for "*"."""
    low, high = _BOUNDS[field]
    values: list[int | None] = []
    for part in text.split(","):
        start, end, step = _element(field, part)
        if step == 1:
            step = None
        if step is not None and end is None:
            end = high
        if start is None and end is None and step is None:
            values.append(None)
        elif start is not None and end is None:
            values.append(start)
        else:
            start = low if start is None else start
            if end is None or (end < 0 < start):
                end = high
            values.extend(_range(field, low, high, start, end, 1 if step is None else step))
    if None in values:
        return None
    found = sorted({v for v in values if v is not None})
    negative = [v for v in found if v < -1]
    if negative:
        raise SyntaxProblem(f"day {negative[0]} (counted from the month's end) is Fugit syntax "
                            "dj_consumer cannot run yet; only L (-1) is supported")
    return tuple(found)


def _range(field: str, low: int, high: int, start: int, end: int, step: int) -> list[int]:
    # Fugit walks from start to end, wrapping past the top (22-2 is 22,23,0,1,2), then takes
    # every step-th value it walked.
    if start < 0 < end or end < 0 < start:
        raise SyntaxProblem(f"{field} range {start}-{end} mixes days from the start and the end")
    if step == 0:
        raise SyntaxProblem(f"{field} step /0 never advances")
    if start < 0:
        low, high = -high, -1
    walked, cur = [start], start
    while cur != end:
        cur += 1
        if cur > high:
            cur = low
            if end > high:
                end -= high + 1
        walked.append(cur)
        if len(walked) > 2 * _BOUNDS[field][1]:
            raise SyntaxProblem(f"{field} range {start}-{end} never ends")
    return walked[::step]


def _weekdays(text: str) -> tuple[Weekday, ...] | None:
    """The weekday field (fugit cron.rb `determine_weekdays` and `weekday_match?`)."""
    entries: set[Weekday] = set()
    for part in text.split(","):
        nth = re.fullmatch(rf"({_VALUE['weekday']})#(-?[1-5]|last|l)", part, re.I)
        if nth:
            count = -1 if nth.group(2).lower().startswith("l") else int(nth.group(2))
            entries.add((_weekday(nth.group(1)) % 7, count))
            continue
        if re.fullmatch(rf"({_VALUE['weekday']})%\d+(\+\d+)?", part, re.I):
            raise SyntaxProblem(f"weekday {part!r} (every n-th week) is Fugit syntax dj_consumer "
                                "cannot run yet")
        start, end, step = _element("weekday", part)
        if step is not None:
            last = end if end is not None else start if start is not None else 6
            first = start or 0
            if first > last:  # Fugit 1.5.2 reads fri-mon/2 as every day, >= 1.12.3 otherwise
                raise SyntaxProblem(f"weekday {part!r} wraps around with a step; Fugit versions "
                                    "disagree on it, write the days out")
            days = list(range(first, last + 1, max(step, 1)))
        elif end is not None:
            assert start is not None
            days = [d % 7 for d in range(start, (end + 7 if start > end else end) + 1)]
        else:
            days = [] if start is None else [start]  # "*" adds nothing (so "*,1" is Mondays)
        entries.update((d % 7, None) for d in days)
    chosen = _first_per_weekday(entries)
    for day, nth_of in chosen or ():
        if nth_of is not None and nth_of < -1:
            raise SyntaxProblem(f"weekday {WEEKDAYS[day]}#{nth_of} (counted from the month's end) is "
                                "Fugit syntax dj_consumer cannot run yet; only #L (#-1) is supported")
    return chosen


def _weekday(text: str) -> int:
    low = text.lower()
    return WEEKDAYS.index(low) if low in WEEKDAYS else int(text)


def _first_per_weekday(entries: set[Weekday]) -> tuple[Weekday, ...] | None:
    # Fugit sorts the entries and matches a date against the first one of its weekday only:
    # "mon,mon#2" is every Monday, "mon#1,mon#3" the first Monday, "mon#1,mon#L" the last.
    if not entries:
        return None
    first: dict[int, Weekday] = {}
    for day, nth in sorted(entries, key=lambda e: (e[0], e[1] is not None, e[1] or 0)):
        first.setdefault(day, (day, nth))
    return tuple(first.values())


def _compact_month_days(fields: Fields) -> Fields:
    # Fugit keeps only the months that have one of the days, and the days one of the months
    # has; none left means the expression never fires (0 0 30 2 *), which it refuses.
    if fields.months is None or fields.days is None:
        return fields
    pairs = [(m, d) for m in fields.months for d in fields.days if d <= MAXDAYS[m]]
    if not pairs:
        raise SyntaxProblem("no month has any of its days")
    months = tuple(sorted({m for m, _ in pairs}))
    days = tuple(sorted({d for _, d in pairs}))
    return Fields(fields.seconds, fields.minutes, fields.hours, days, months, fields.weekdays,
                  fields.zone)
