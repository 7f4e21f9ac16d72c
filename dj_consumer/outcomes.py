"""Outcome participants: write something in the same transaction as a job's outcome, or
write the outcome another way.

A participant is registered at worker start (`Worker(..., participants=[...])`, or by the
worker itself: recurring rows, dj_consumer/recurring.py). For each job it `claims`, the
recorder opens ONE transaction (SQLite: `BEGIN IMMEDIATE`), asks the participants in order
whether one writes the outcome `instead` of the normal fenced write (the first answer that is
not None wins), runs the normal write otherwise, then gives every claiming participant its
`also` call, and commits. A passing fault (connection lost, deadlock) rolls it all back and
the whole unit is tried again (Recorder.record); a refusal reaches Recorder.record_refused.

Folded and batched deletes: a success is normally deleted by the slot's NEXT reserve, in
the reserve's transaction (Store.folds_deletes), or with its batch (reserve_batch). Neither
transaction is one a participant could join, so a job a participant claims is never batched,
and folded only when its one claiming participant is `Scripted` and the strategy carries
statements with the DELETE (Store.folds_extras: MySQL's one-round-trip reserve): its
statements (run.Extra, fenced on the DELETE's ROW_COUNT) then ride in the reserve's script.
Otherwise its success is written by Recorder.record at once, in the participant's
transaction (on MySQL one script: Store.delete_with). This is decided per job (`claims`), so
jobs nobody claims keep the folded delete: run records (every job) cost each success one
commit on PostgreSQL (one statement: Scripted.succeeded_statement) and SQLite, none on
MySQL; recurring (some rows) costs nothing for the others.

With no participant registered nothing here runs: the recorder's path is exactly the one it
had before (Recorder.claims is one list check).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import TextClause, text

from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded
from dj_consumer.run import Extra
from dj_consumer.store import Store

__all__ = ["Attender", "Outcomes", "Participant", "Preparer", "Scripted", "Tx"]

#: The database's clock, naive UTC (the one `locked_at` leases are read by).
_DB_NOW = {
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "postgresql": "SELECT CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS timestamp)",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}


class Tx:
    """The open transaction of one job's outcome write: run statements in it, fenced by the
    worker name `me` where they touch the job's row."""

    def __init__(self, store: Store, conn: Any, me: str, now: datetime) -> None:
        self.store = store
        self.conn = conn
        self.me = me
        self.now = now  # the worker's clock, as every other outcome write uses
        self.dialect = store.dialect
        self.table = store.table  # quoted
        self._db_now: datetime | None = None

    def execute(self, stmt: TextClause | str, params: dict[str, Any] | None = None) -> Any:
        """Run one statement in the transaction (bound parameters only)."""
        if isinstance(stmt, str):
            stmt = text(stmt)
        return self.conn.execute(stmt, params or {})

    def ts(self, value: datetime) -> datetime:
        """A time as the table stores it (MySQL: whole seconds)."""
        return self.store.ts(value)

    def db_now(self) -> datetime:
        """The database's now, naive UTC (read once per transaction)."""
        if self._db_now is None:
            value = self.conn.execute(text(_DB_NOW[self.dialect])).scalar()
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            assert isinstance(value, datetime)
            self._db_now = value.replace(tzinfo=None)
        return self._db_now

    def write_outcome(self, job: Job, outcome: Outcome) -> bool:
        """The normal fenced outcome write (Recorder.write's statements), in this transaction;
        False when the row is no longer ours."""
        store, sql, me, now = self.store, self.store.sql, self.me, self.now
        if isinstance(outcome, Succeeded) or (isinstance(outcome, Failed) and outcome.destroy):
            stmt, params = sql.delete, {"id": job.id, "me": me}
        elif isinstance(outcome, Rescheduled):
            stmt, params = sql.reschedule, {
                "id": job.id, "me": me, "attempts": outcome.attempts,
                "run_at": store.ts(outcome.run_at), "last_error": store.clip(outcome.last_error),
                "now": store.ts(now)}
        elif isinstance(outcome, Failed):
            stmt, params = sql.fail, {
                "id": job.id, "me": me, "attempts": outcome.attempts,
                "last_error": store.clip(outcome.last_error), "now": store.ts(now)}
        else:
            stmt, params = sql.interrupt, {
                "id": job.id, "me": me, "last_error": store.clip(outcome.last_error),
                "now": store.ts(now)}
        return bool(self.conn.execute(stmt, params).rowcount == 1)


class Participant(Protocol):
    """Takes part in the outcome writes of the jobs it claims."""

    def claims(self, job: Job) -> bool:
        """Does this participant act on `job`'s outcome? Called before the job runs's outcome
        is recorded; a claimed success is written at once (never folded nor batched)."""
        ...

    def instead(self, tx: Tx, job: Job, outcome: Outcome) -> bool | None:
        """Write the outcome another way (fenced by tx.me) and say whether the row was still
        ours; None: leave it to the next participant, or to the normal write."""
        ...

    def also(self, tx: Tx, job: Job, outcome: Outcome, written: bool) -> None:
        """Extra statements in the outcome's transaction; `written`: the outcome write (normal
        or instead) touched the row (False: the lock was lost, nothing of the job changed)."""
        ...


@runtime_checkable
class Preparer(Protocol):
    """A participant that also looks at a job before it runs (recurring rows read their
    schedule). Optional: a participant without these methods is never asked."""

    def refuses(self, job_id: int) -> bool:
        """Is this reserved-looking row one not to take now (checked by the reserve's
        accept, before the row is claimed)?"""
        ...

    def prepare(self, job: Job) -> Job | None:
        """The job to run (possibly changed), or None: hand the row back unrun."""
        ...


@runtime_checkable
class Attender(Protocol):
    """A participant that is also there while a job runs (run records: the record says
    running first, the handler's progress reaches it). Optional."""

    def attempt(self, job: Job, execute: Callable[[], Outcome]) -> Outcome:
        """Run `execute` (the attempt) and return its Outcome."""
        ...


@runtime_checkable
class Scripted(Protocol):
    """A participant whose writes for a success can travel with its DELETE: in one MySQL
    multi-statement script, or one PostgreSQL statement (one round trip instead of four or
    five). Optional."""

    def scripted(self, job: Job, outcome: Succeeded, now: datetime) -> \
            tuple[list[TextClause], dict[str, Any]] | None:
        """The statements (binds prefixed, none named id/me) to run after the DELETE in its
        transaction, each writing nothing unless the DELETE took the row; None: not for this
        job (the transaction of _once is used)."""
        ...

    def succeeded_statement(self, job: Job, outcome: Succeeded, me: str, now: datetime) -> Any:
        """PostgreSQL: the success's fenced DELETE and the participant's writes as ONE
        statement (a runs.store.Bound: `.stmt`, `.params`) that returns a row only when the
        DELETE took the row; None: not for this job."""
        ...


class Outcomes:
    """The registered participants and the transaction they share with an outcome write."""

    def __init__(self, store: Store, participants: Sequence[Participant] = ()) -> None:
        self.store = store
        self.participants: list[Participant] = []
        self.preparers: list[Preparer] = []
        self.attenders: list[Attender] = []
        self._scripted: set[int] = set()  # ids of the Scripted participants
        for participant in participants:
            self.add(participant)

    def add(self, participant: Participant) -> None:
        self.participants.append(participant)
        if isinstance(participant, Preparer):
            self.preparers.append(participant)
        if isinstance(participant, Attender):
            self.attenders.append(participant)
        if isinstance(participant, Scripted):  # asked once: a Protocol check is slow
            self._scripted.add(id(participant))

    def run(self, job: Job, execute: Callable[[], Outcome]) -> Outcome:
        """The attempt, inside every attender's `attempt` (none: just `execute()`)."""
        for attender in self.attenders:
            execute = _around(attender, job, execute)
        return execute()

    def refuses(self, job_id: int) -> bool:
        return any(p.refuses(job_id) for p in self.preparers)

    def prepare(self, job: Job) -> Job | None:
        for preparer in self.preparers:
            prepared = preparer.prepare(job)
            if prepared is None:
                return None
            job = prepared
        return job

    def claims(self, job: Job) -> bool:
        return any(p.claims(job) for p in self.participants)

    def write(self, job: Job, outcome: Outcome, me: str, now: datetime) -> bool:
        """The outcome and the participants' statements in one transaction, tried again as a
        whole on a passing fault; whether the row was still ours."""
        claiming = [p for p in self.participants if p.claims(job)]
        if isinstance(outcome, Succeeded) and len(claiming) == 1 and self.store.db.scripts \
                and id(claiming[0]) in self._scripted:
            script = claiming[0].scripted(job, outcome, now)  # type: ignore[attr-defined]
            if script is not None:
                return self.store.db.retrying("record", lambda: self._script(job, me, *script))
        elif isinstance(outcome, Succeeded) and len(claiming) == 1 \
                and self.store.dialect == "postgresql" and id(claiming[0]) in self._scripted:
            one = claiming[0].succeeded_statement(job, outcome, me, now)  # type: ignore[attr-defined]
            if one is not None:
                return self.store.db.retrying("record", lambda: self._one(one.stmt, one.params))
        return self.store.db.retrying("record", lambda: self._once(claiming, job, outcome, me, now))

    def _script(self, job: Job, me: str, stmts: list[TextClause], params: dict[str, Any]) -> bool:
        """MySQL: BEGIN, the fenced DELETE, the participant's statements, COMMIT — one round
        trip (Store.delete_with)."""
        return self.store.delete_with(job.id, me, (stmts, params))

    def _one(self, stmt: TextClause, params: dict[str, Any]) -> bool:
        """PostgreSQL: Scripted.succeeded_statement, autocommitted: one round trip."""
        with self.store.db.connection() as conn:
            return conn.execute(stmt, params).first() is not None

    def rides(self, job: Job, outcome: Succeeded, now: datetime) -> Extra | None:
        """The claiming participant's statements for this success, when they can ride with
        its DELETE in the slot's next reserve (Store.folds_extras; one Scripted participant
        claims it); None: write it now (write)."""
        if not self.store.folds_extras:
            return None
        claiming = [p for p in self.participants if p.claims(job)]
        if len(claiming) != 1 or id(claiming[0]) not in self._scripted:
            return None
        return claiming[0].scripted(job, outcome, now)  # type: ignore[attr-defined, no-any-return]

    def _once(self, claiming: list[Participant], job: Job, outcome: Outcome, me: str,
              now: datetime) -> bool:
        db = self.store.db
        if self.store.dialect == "sqlite":
            # The SQLite connection autocommits each statement: a real transaction, taking the
            # write lock at once so no other writer slips in between our statements.
            with db.connection() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    written = self._statements(claiming, Tx(self.store, conn, me, now), job, outcome)
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            return written
        with db.connection(tx=True) as conn, conn.begin():
            return self._statements(claiming, Tx(self.store, conn, me, now), job, outcome)

    @staticmethod
    def _statements(claiming: list[Participant], tx: Tx, job: Job, outcome: Outcome) -> bool:
        written: bool | None = None
        for participant in claiming:
            written = participant.instead(tx, job, outcome)
            if written is not None:
                break
        if written is None:
            written = tx.write_outcome(job, outcome)
        for participant in claiming:
            participant.also(tx, job, outcome, written)
        return written


def _around(attender: Attender, job: Job, execute: Callable[[], Outcome]) -> Callable[[], Outcome]:
    return lambda: attender.attempt(job, execute)
