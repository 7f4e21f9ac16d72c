"""run.Deferred: the success deleted with the slot's next reserve is settled exactly once."""

from __future__ import annotations

from dj_consumer.models import Job
from dj_consumer.run import Deferred


def _deferred(heard: list[bool | None]) -> Deferred:
    job = Job(id=1, name="J", display_name="J", payload=None, attempts=0, max_attempts=25,
              queue=None, priority=0, run_at=None, locked_by="me", handler="")
    return Deferred(job, 1.0, lambda d: heard.append(d.deleted))


def test_the_first_answer_stands_and_is_told_once() -> None:
    # The MySQL script tells "deleted" while the server commits; a retry after a lost COMMIT
    # reply finds the row gone (by our own hand) and would say "not ours": it is not told.
    heard: list[bool | None] = []
    finished = _deferred(heard)
    finished.settle(True)
    finished.settle(False)
    finished.settle(True)
    assert heard == [True] and finished.deleted is True


def test_a_lost_row_is_told_once_too() -> None:
    heard: list[bool | None] = []
    finished = _deferred(heard)
    finished.settle(False)
    finished.settle(True)
    assert heard == [False]
