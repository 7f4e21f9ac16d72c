"""Rails' default_sql: read read_ahead candidates without a lock, then claim one only if it
is still ready (and still at the attempts read). Works everywhere; on PostgreSQL the claim
also deletes the previous success (one commit per job)."""

from __future__ import annotations

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
from dj_consumer.reserve.scan import claim_many, try_claim
from dj_consumer.sql import ReserveSQL


class DefaultSQL(Reserver):
    def __init__(self, tools: Tools) -> None:
        super().__init__(tools)
        self.folds_deletes = tools.dialect == "postgresql"

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        """None only when the candidates were all the ready rows."""
        t, limit = self.t, self.t.config.read_ahead
        with t.db.connection() as conn:
            rows = t.db.run(conn, sql.candidates, dict(params, limit=limit)).all()
            for row in rows:
                job = to_job(row)
                parsed = try_claim(t, conn, params, job, accept, done)
                if parsed:
                    return locked(job, params["locked_at"], params["me"], parsed)
        return None if len(rows) < limit else SCAN

    def many(self, params: Params, accept: Accept) -> tuple[list[JobRow], bool]:
        t, limit = self.t, params["n"]
        with t.db.connection() as conn:
            page = [to_job(r) for r in t.db.run(conn, t.sql.candidates,
                                                dict(params, limit=limit)).all()]
            ours = [(job, parsed) for job in page if (parsed := accept(job))]
            return claim_many(t, conn, params, ours), len(page) == limit
