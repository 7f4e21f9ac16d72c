"""Rails' optimized_sql: lock one ready row in one statement, then check it (PostgreSQL:
UPDATE … RETURNING; MySQL: UPDATE … ORDER BY … LIMIT 1, read back by the id it hands us).

They lock a row before they can read its name: a row that is not ours is handed back at
once, and for a while rows are parsed before they are claimed (as default_sql does)."""

from __future__ import annotations

from dj_consumer.db import _RowTuple
from dj_consumer.models import JobRow
from dj_consumer.reserve.base import (
    SCAN,
    Accept,
    Done,
    Found,
    Params,
    Reserver,
    Tools,
    locked,
    to_job,
)
from dj_consumer.reserve.default_sql import DefaultSQL
from dj_consumer.sql import ReserveSQL

#: The strategies that lock before they parse.
LOCK_FIRST = ("update_returning", "update_limit")


class LockFirst(Reserver):
    def __init__(self, tools: Tools, strategy: str) -> None:
        super().__init__(tools)
        self.strategy = strategy
        self.parse_first = DefaultSQL(tools)  # while claims before parsing are paused

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        if self.t.claims_paused():
            return self.parse_first.one(params, accept, sql, done)
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        with t.db.connection() as conn:
            if self.strategy == "update_limit":
                result = t.db.run(conn, sql.update_limit, params)
                row = None if result.rowcount != 1 else t.db.run(
                    conn, t.sql.get, {"id": result.lastrowid}).first()
            elif done.deleting is not None:
                first = t.db.run(conn, sql.update_returning_after,
                                 dict(params, done_id=done.id)).first()
                done.deleted = bool(first[0])
                row = None if first[1] is None else _RowTuple(first[1:])
            else:
                row = t.db.run(conn, sql.update_returning, params).first()
            if row is None:
                return None
            job = to_job(row)
            parsed = accept(job)
            if parsed:
                return locked(job, locked_at, me, parsed)
            t.db.run(conn, t.sql.unclaim, {"id": job.id, "me": me})
        self._lookalike_locked(job.id)
        return SCAN

    def many(self, params: Params, accept: Accept) -> tuple[list[JobRow], bool]:
        """Lock :n rows, then check them; rows not ours are handed back."""
        if self.t.claims_paused():
            return self.parse_first.many(params, accept)
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        with t.db.connection() as conn:
            if self.strategy == "update_returning":
                found = [to_job(r) for r in t.db.run(conn, t.sql.update_returning_n, params).all()]
            else:
                if t.db.run(conn, t.sql.update_limit_n, params).rowcount == 0:
                    return [], False
                found = [to_job(r) for r in t.db.run(conn, t.sql.read_back_all,
                                                     {"locked_at": locked_at, "me": me}).all()]
            found.sort(key=lambda j: (j.priority, j.run_at or locked_at, j.id))
            try:
                mine = [(job, parsed) for job in found if (parsed := accept(job))]
            except Exception:  # a parser bug: nothing we locked may stay locked
                t.db.run(conn, t.sql.unclaim_ids, {"ids": [j.id for j in found], "me": me})
                raise
            others = sorted({j.id for j in found} - {j.id for j, _ in mine})
            if others:
                t.db.run(conn, t.sql.unclaim_ids, {"ids": others, "me": me})
        if others:
            self._lookalike_locked(others[0])
        return [locked(job, locked_at, me, parsed) for job, parsed in mine], len(found) == params["n"]

    def _lookalike_locked(self, job_id: int) -> None:
        self.t.pause_claims(job_id, "reserve.lookalike_locked",
                            f"reserve_sql {self.strategy!r} locks a row before it can read its "
                            "name; this one was not ours and was handed back at once. Rows are "
                            "now parsed before they are claimed for a while ('auto' always does)")
