"""Outcome participants (dj_consumer/outcomes.py): statements in the same transaction as a
job's outcome (`also`), or written instead of it (`instead`), fenced by locked_by; a claimed
success is never folded into the next reserve nor batched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Job, Registry, make_worker
from dj_consumer.errors import FatalError
from dj_consumer.models import Outcome, Succeeded
from dj_consumer.outcomes import Tx
from tests.conftest import DB
from tests.integration.test_protocol import obj


@pytest.fixture
def notes(db: DB) -> Iterator[sa.Table]:
    table = sa.Table(f"{db.table}_notes", sa.MetaData(),
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                     sa.Column("job_id", sa.Integer), sa.Column("outcome", sa.String(40)),
                     sa.Column("written", sa.Boolean))
    table.create(db.engine)
    yield table
    table.drop(db.engine, checkfirst=True)


class Note:
    """Writes a note per outcome of the jobs it claims (as run records do)."""

    def __init__(self, table: sa.Table, *, only: str | None = None, fail: bool = False) -> None:
        self.table, self.only, self.fail = table, only, fail

    def claims(self, job: Job) -> bool:
        return self.only is None or job.name == self.only

    def instead(self, tx: Tx, job: Job, outcome: Outcome) -> bool | None:
        return None

    def also(self, tx: Tx, job: Job, outcome: Outcome, written: bool) -> None:
        tx.execute(sa.insert(self.table).values(job_id=job.id, outcome=type(outcome).__name__,
                                                written=written))  # type: ignore[arg-type]
        if self.fail:
            raise RuntimeError("participant bug")


class Keep:
    """Keeps a success's row (as recurring rows do): unlocked, run_at pushed a day ahead."""

    def claims(self, job: Job) -> bool:
        return True

    def instead(self, tx: Tx, job: Job, outcome: Outcome) -> bool | None:
        if not isinstance(outcome, Succeeded):
            return None
        result = tx.execute(
            f"UPDATE {tx.table} SET locked_at = NULL, locked_by = NULL, run_at = :run_at "
            "WHERE id = :id AND locked_by = :me",
            {"id": job.id, "me": tx.me, "run_at": tx.ts(tx.db_now().replace(microsecond=0)
                                                        + timedelta(days=1))})
        return bool(result.rowcount == 1)

    def also(self, tx: Tx, job: Job, outcome: Outcome, written: bool) -> None:
        pass


def noted(db: DB, table: sa.Table) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(table.c.job_id, table.c.outcome, table.c.written).order_by(table.c.id))]


def registry() -> Registry:
    reg = Registry()

    @reg.run("Ok")
    def ok(j: Job) -> None:
        pass

    @reg.run("Other")
    def other(j: Job) -> None:
        pass

    @reg.run("Bad")
    def bad(j: Job) -> None:
        raise ValueError("boom")

    return reg


@pytest.mark.parametrize("batch", [1, 5])
def test_also_runs_with_every_outcome_even_where_deletes_are_folded(
        db: DB, notes: sa.Table, batch: int) -> None:
    """Failed before the slots change: the first success's DELETE rode with the second
    reserve (or the batch's delete_many) and the participant never saw it."""
    ids = [db.insert(obj("Ok")), db.insert(obj("Ok")), db.insert(obj("Bad"))]
    w = make_worker(db.config(reserve_batch=batch), registry(), participants=[Note(notes)])
    try:
        assert w.work_off(10) == (2, 1)
    finally:
        w.close()
    assert sorted(noted(db, notes)) == sorted([(ids[0], "Succeeded", True),
                                               (ids[1], "Succeeded", True),
                                               (ids[2], "Rescheduled", True)])
    assert [r.id for r in db.rows()] == [ids[2]]


def test_unclaimed_jobs_keep_the_normal_path(db: DB, notes: sa.Table) -> None:
    ids = [db.insert(obj("Other")), db.insert(obj("Ok")), db.insert(obj("Other"))]
    w = make_worker(db.config(), registry(), participants=[Note(notes, only="Ok")])
    try:
        assert w.work_off(10) == (3, 0)
    finally:
        w.close()
    assert noted(db, notes) == [(ids[1], "Succeeded", True)]
    assert db.count() == 0


def test_a_participant_that_fails_rolls_the_outcome_back(db: DB, notes: sa.Table) -> None:
    """One transaction: the DELETE is undone with the participant's statement; the success
    stays locked (it must not run again) and the worker stops, as for a refused DELETE."""
    job_id = db.insert(obj("Ok"))
    w = make_worker(db.config(), registry(), participants=[Note(notes, fail=True)])
    try:
        with pytest.raises(FatalError):
            w.work_off(1)
    finally:
        w.close()
    row = db.row(job_id)
    assert row is not None and row.locked_by is not None
    assert noted(db, notes) == []


def test_instead_replaces_the_write_and_is_fenced(db: DB, notes: sa.Table) -> None:
    job_id = db.insert(obj("Ok"))
    w = make_worker(db.config(), registry(), participants=[Keep(), Note(notes)])
    try:
        assert w.work_off(1) == (1, 0)
    finally:
        w.close()
    row = db.row(job_id)
    assert row is not None and row.locked_by is None and row.attempts == 0
    assert noted(db, notes) == [(job_id, "Succeeded", True)]


def test_a_lost_lock_reaches_also_as_not_written(db: DB, notes: sa.Table) -> None:
    reg = Registry()
    job_id = db.insert(obj("Ok"))

    @reg.run("Ok")
    def taken(j: Job) -> None:
        db.update(j.id, locked_by="someone else")

    w = make_worker(db.config(), reg, participants=[Keep(), Note(notes)])
    try:
        w.work_off(1)
    finally:
        w.close()
    assert db.row(job_id).locked_by == "someone else"
    assert noted(db, notes) == [(job_id, "Succeeded", False)]
