"""dj_consumer.cron: parsing and next times (beyond the Fugit table), reoccur_in intervals,
whole-interval rescheduling, and the optional cronsim extra."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dj_consumer import cron
from tests.conftest import ROOT, clean_env


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- parse ----------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "words"), [
    ("* * * *", "expected 5 or 6 fields"),
    ("60 * * * *", "minute field '60'"),
    ("0 0 30 2 *", "no month has any of its days"),
    ("0 10 * * 5L", "fri#L"),
    ("0 0 ? * *", "write *"),
    ("0 9 * * * Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("@daily Europe/Berlin", "write 0 0 * * * and the zone"),
    ("@reboot", "not one of Fugit's names"),
    ("0 9 * * 1,", "empty list element"),
    ("*/0 * * * *", "never advances"),
    ("0 0 -3 * *", "cannot run yet"),
])
def test_a_bad_expression_is_one_clear_line(expr: str, words: str) -> None:
    with pytest.raises(cron.CronError) as caught:
        cron.parse(expr)
    message = str(caught.value)
    assert words in message and repr(expr) in message and "\n" not in message


def test_a_non_string_is_refused() -> None:
    with pytest.raises(cron.CronError, match="must be a string"):
        cron.parse(None)  # type: ignore[arg-type]


def test_zone_suffix_and_default_zone() -> None:
    assert cron.parse("0 9 * * * Europe/Berlin").zone == ZoneInfo("Europe/Berlin")
    assert cron.parse("0 9 * * * +05:30").zone == timezone(timedelta(hours=5, minutes=30))
    assert cron.parse("0 9 * * *").zone == ZoneInfo("UTC")
    # Without a suffix Fugit uses the Ruby process's zone; the caller can say which.
    tokyo = cron.parse("0 9 * * *", default_zone="Asia/Tokyo")
    assert tokyo.next_after(t("2024-05-06 07:00:00")) == t("2024-05-07 00:00:00")
    assert cron.parse("0 9 * * * UTC", default_zone="Asia/Tokyo").zone == ZoneInfo("UTC")
    with pytest.raises(cron.CronError, match="unknown default time zone 'Mars/Olympus'"):
        cron.parse("0 9 * * *", default_zone="Mars/Olympus")


def test_six_fields_are_seconds_first_unless_the_sixth_is_a_zone() -> None:
    assert cron.parse("30 0 9 * * *").fields.seconds == (30,)
    assert cron.parse("0 9 * * * EST").zone == ZoneInfo("EST")
    assert cron.parse("0 0 9 * * SAT").fields.weekdays == ((6, None),)  # a weekday, not a zone


# --- next_after -------------------------------------------------------------------------


def test_next_after_is_strictly_later_and_ignores_fractions() -> None:
    daily = cron.parse("0 9 * * *")
    assert daily.next_after(t("2024-05-06 09:00:00")) == t("2024-05-07 09:00:00")
    assert daily.next_after(t("2024-05-06 08:59:59.999999")) == t("2024-05-06 09:00:00")
    assert daily.next_after(t("2024-05-06 09:00:00.5")) == t("2024-05-07 09:00:00")


def test_next_after_takes_aware_times_and_returns_naive_utc() -> None:
    berlin = datetime(2024, 5, 6, 10, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 08:00 UTC
    got = cron.parse("0 9 * * *").next_after(berlin)
    assert got == t("2024-05-06 09:00:00") and got.tzinfo is None
    assert cron.parse("0 9 * * *").next_after(berlin.astimezone(UTC)) == got


def test_both_day_fields_restricted_means_either() -> None:
    # 1st and 15th, and every Friday (man 5 crontab); cronsim alone would AND "*/2" with 1.
    s = cron.parse("0 0 */2 * 1")
    days = [s.next_after(t("2024-05-06 00:00:00"))]
    while len(days) < 4:
        days.append(s.next_after(days[-1]))
    assert [d.day for d in days] == [7, 9, 11, 13]  # odd days, and Monday the 13th


def test_dst_skipped_time_never_runs_and_repeated_time_runs_twice() -> None:
    ny = cron.parse("30 2 * * * America/New_York")
    assert ny.next_after(t("2024-03-09 12:00:00")) == t("2024-03-11 06:30:00")
    fall = cron.parse("30 1 * * * America/New_York")
    first = fall.next_after(t("2024-11-02 12:00:00"))
    assert first == t("2024-11-03 05:30:00")  # 01:30 EDT
    assert fall.next_after(first) == t("2024-11-03 06:30:00")  # 01:30 EST, an hour later


def test_a_schedule_that_never_comes_says_so() -> None:
    leap = cron.parse("0 0 29 2 *")
    assert leap.next_after(t("2024-03-01 00:00:00")) == t("2028-02-29 00:00:00")
    with pytest.raises(cron.CronError, match="no run time in the 50 years"):
        leap.next_after(t("9996-03-01 00:00:00"))  # 10000 is past what datetime holds


# --- reoccur_in -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "want"), [
    ("10800", timedelta(hours=3)),
    (" 10800 ", timedelta(hours=3)),
    (10800, timedelta(hours=3)),
    (1.5, timedelta(seconds=1.5)),
    (timedelta(minutes=5), timedelta(minutes=5)),
    ("PT3H", timedelta(hours=3)),
    ("pt3h", timedelta(hours=3)),
    ("P1DT12H", timedelta(days=1, hours=12)),
    ("P1W", timedelta(weeks=1)),
    ("PT1H30M15.5S", timedelta(hours=1, minutes=30, seconds=15.5)),
    ("PT0,5S", timedelta(seconds=0.5)),
])
def test_parse_interval(value: str | int | float | timedelta, want: timedelta) -> None:
    assert cron.parse_interval(value) == want


@pytest.mark.parametrize(("value", "words"), [
    ("0", "not a positive interval"),
    (0, "not a positive interval"),
    (timedelta(seconds=-1), "not a positive interval"),
    ("PT0S", "not a positive interval"),
    ("-5", "neither whole seconds"),
    ("3h", "neither whole seconds"),
    ("P", "neither whole seconds"),
    ("PT", "neither whole seconds"),
    ("P1DT", "neither whole seconds"),
    ("", "neither whole seconds"),
    ("P1M", "years or months"),
    ("P1Y", "years or months"),
    ("last_of_month", "calendar rule of the delayed_job fork"),
    (True, "not bool"),
    (None, "not NoneType"),
])
def test_parse_interval_refuses_in_one_line(value: object, words: str) -> None:
    with pytest.raises(cron.IntervalError) as caught:
        cron.parse_interval(value)  # type: ignore[arg-type]
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_next_reoccurrence_keeps_the_grid() -> None:
    run_at, hour = t("2024-05-06 10:00:00"), timedelta(hours=1)
    # Picked up late: the next slot is still on the hour (no drift).
    assert cron.next_reoccurrence(run_at, hour, t("2024-05-06 10:00:07")) == t("2024-05-06 11:00:00")
    # Down for hours: one run at the next slot, not one per missed slot (no burst).
    assert cron.next_reoccurrence(run_at, hour, t("2024-05-06 13:30:00")) == t("2024-05-06 14:00:00")
    # Exactly on a slot: that slot has just run, so the next one.
    assert cron.next_reoccurrence(run_at, hour, t("2024-05-06 14:00:00")) == t("2024-05-06 15:00:00")
    # Run before its time (an operator's "run now"): never the same slot again.
    assert cron.next_reoccurrence(run_at, hour, t("2024-05-06 09:00:00")) == t("2024-05-06 11:00:00")
    # Sub-second intervals and times stay exact.
    ms = timedelta(milliseconds=250)
    assert cron.next_reoccurrence(run_at, ms, t("2024-05-06 10:00:01.1")) == t("2024-05-06 10:00:01.25")
    with pytest.raises(cron.IntervalError):
        cron.next_reoccurrence(run_at, timedelta(0), run_at)


def test_twenty_late_runs_never_drift_and_never_repeat_a_slot() -> None:
    run_at, every = t("2024-05-06 10:00:00"), timedelta(minutes=10)
    slots = []
    for turn in range(20):
        late = timedelta(seconds=37 * turn % 900)  # sometimes more than a whole interval late
        run_at = cron.next_reoccurrence(run_at, every, run_at + late)
        slots.append(run_at)
    assert len(set(slots)) == 20 and slots == sorted(slots)
    assert all((s - t("2024-05-06 10:00:00")) % every == timedelta(0) for s in slots)


# --- the optional extra -----------------------------------------------------------------


def test_without_cronsim_dj_consumer_imports_and_cron_says_which_extra() -> None:
    code = (
        "import sys; sys.modules['cronsim'] = None\n"
        "import dj_consumer, dj_consumer.cron as c\n"
        "assert c.parse_interval('PT3H').seconds == 10800\n"
        "try:\n    c.parse('0 9 * * *')\nexcept c.CronUnavailable as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Cron expressions need the cronsim package: pip install 'dj_consumer[cron]'."
