"""The negative cache of rows a reserve turned down (dj_consumer.rejected)."""

from __future__ import annotations

import pytest

from dj_consumer import rejected
from dj_consumer.models import JobRow, ParsedHandler
from dj_consumer.rejected import Rejected


def row(job_id: int, handler: str = "--- !ruby/object:ImportJob {}\n") -> JobRow:
    return JobRow(id=job_id, priority=0, attempts=0, handler=handler, run_at=None, queue=None)


#: What accept answers for a row of ours: its handler, parsed.
OURS = ParsedHandler("ImportJob", "ImportJob", {})


def counting(verdict: ParsedHandler | None) -> tuple[list[int], object]:
    """accept answering `verdict` (None: not ours) and noting each row it was asked about."""
    asked: list[int] = []

    def accept(job: JobRow) -> ParsedHandler | None:
        asked.append(job.id)
        return verdict

    return asked, accept


def test_a_rejected_row_is_not_asked_about_again_until_it_expires() -> None:
    now = [0.0]
    cache = Rejected(clock=lambda: now[0])
    asked, accept = counting(None)
    check = cache.wrap(accept)  # type: ignore[arg-type]
    assert check(row(1)) is None and check(row(1)) is None
    assert asked == [1]
    now[0] = rejected.REJECT_TTL + 1
    assert check(row(1)) is None
    assert asked == [1, 1]


def test_a_changed_handler_or_new_names_are_asked_about_again() -> None:
    cache = Rejected()
    asked, accept = counting(None)
    check = cache.wrap(accept)  # type: ignore[arg-type]
    check(row(1))
    check(row(1, "--- !ruby/object:Import {}\n"))
    cache.clear()
    check(row(1, "--- !ruby/object:Import {}\n"))
    assert asked == [1, 1, 1]


def test_accepted_rows_are_never_remembered() -> None:
    cache = Rejected()
    asked, accept = counting(OURS)
    check = cache.wrap(accept)  # type: ignore[arg-type]
    assert check(row(1)) is OURS and check(row(1)) is OURS
    assert asked == [1, 1] and len(cache) == 0


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejected, "REJECT_MAX", 10)
    now = [0.0]
    cache = Rejected(clock=lambda: now[0])
    check = cache.wrap(lambda job: None)
    for i in range(10):
        check(row(i))
    now[0] = rejected.REJECT_TTL + 1  # all expired: dropped to make room
    check(row(100))
    assert len(cache) == 1
    for i in range(20):
        check(row(200 + i))
    assert len(cache) <= 10
