"""SELECT … FOR UPDATE SKIP LOCKED: the next ready row nobody holds, checked and claimed in
one short transaction, which also deletes the previous success (one commit per job)."""

from __future__ import annotations

from dj_consumer.db import _RowTuple
from dj_consumer.models import JobRow
from dj_consumer.reserve.base import SCAN, Accept, Done, Found, Params, Reserver, locked, to_job
from dj_consumer.reserve.scan import claim_many
from dj_consumer.sql import ReserveSQL


class SkipLocked(Reserver):
    folds_deletes = True

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        """A row that is not ours is let go at once (commit) and the scan goes on without
        locks."""
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        with t.db.connection(tx=True) as conn, conn.begin():
            if done.deleting is not None:
                done.deleted = t.db.run(conn, t.sql.delete, {"id": done.id, "me": me}).rowcount == 1
            row = t.db.run(conn, sql.lock_next, params).first()
            if row is None:
                return None
            job = to_job(row)
            parsed = accept(job)
            if parsed:
                t.db.run(conn, t.sql.claim_locked, {"id": job.id, "now": locked_at, "me": me})
                return locked(job, locked_at, me, parsed)
        return SCAN

    def many(self, params: Params, accept: Accept) -> tuple[list[JobRow], bool]:
        """SELECT :n rows … FOR UPDATE SKIP LOCKED and claim the surely-ours ones in one short
        transaction; parse every row after it ended (no lock held), hand back a sure row that
        was not ours after all, and claim the other rows of ours if still ready."""
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        claim_sure = int(not t.claims_paused())
        with t.db.connection(tx=True) as conn, conn.begin():
            found = t.db.run(conn, t.sql.lock_n, dict(params, claim_sure=claim_sure)).all()
            sure = {int(r[0]) for r in found if r[6]}
            if sure:
                t.db.run(conn, t.sql.claim_ids, {"ids": sorted(sure), "locked_at": locked_at,
                                                 "me": me})
        jobs = [to_job(_RowTuple(r[:6])) for r in found]  # (without the `sure` column)
        with t.db.connection() as conn:
            try:
                verdicts = [accept(job) for job in jobs]
            except Exception:  # a parser bug: the sure rows must not stay locked by us
                if sure:
                    t.db.run(conn, t.sql.unclaim_ids, {"ids": sorted(sure), "me": me})
                raise
            ours = [(j, v) for j, v in zip(jobs, verdicts, strict=True) if v]
            lookalikes = [j.id for j, v in zip(jobs, verdicts, strict=True) if j.id in sure and not v]
            if lookalikes:
                t.db.run(conn, t.sql.unclaim_ids, {"ids": lookalikes, "me": me})
                t.not_ours_after_all(lookalikes[0])
            later = {j.id for j in claim_many(t, conn, params, [o for o in ours if o[0].id not in sure])}
        mine = [locked(j, locked_at, me, v) for j, v in ours if j.id in sure or j.id in later]
        return mine, len(found) == params["n"]
