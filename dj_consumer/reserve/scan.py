"""The scan past the rows a reserve could not take (not ours, or taken by another worker
first): the ready rows in (priority, run_at, id) order, page after page, each starting
after the last row of the one before, until rows of ours are claimed or the rows end.

Plain reads: no row is locked while another is parsed, and none waits on a lock. A claim is
Rails' default_sql claim: only if the row is still ready and still at the attempts read, so
a row another worker ran and rescheduled meanwhile is not run with the old count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from dj_consumer.models import JobRow
from dj_consumer.reserve.base import Accept, Done, Params, Tools, Verdict, locked, to_job
from dj_consumer.sql import ReserveSQL

#: The scan reads pages of read_ahead rows, doubling up to this many.
SCAN_PAGE_MAX = 500


def scan_one(t: Tools, params: Params, accept: Accept, sql: ReserveSQL,
             done: Done) -> JobRow | None:
    """The first row of ours still ready, claimed; None when the ready rows end. A row
    turned down before (Rejected) or tried already in this reserve costs no parse."""
    limit, key = t.config.read_ahead, dict[str, Any]()
    with t.db.connection() as conn:
        while True:
            page = t.db.run(conn, sql.scan_after if key else sql.scan,
                            dict(params, limit=limit, **key)).all()
            for row in page:
                job = to_job(row)
                parsed = try_claim(t, conn, params, job, accept, done)
                if parsed:
                    return locked(job, params["locked_at"], params["me"], parsed)
            if len(page) < limit or page[-1].run_at is None:
                return None
            key, limit = t.sql.keyset(page[-1]), min(2 * limit, SCAN_PAGE_MAX)


def try_claim(t: Tools, conn: Connection, params: Params, job: JobRow, accept: Accept,
              done: Done) -> Verdict:
    """Claim a row read without a lock if it is ours and still ready: what accept made of
    it, or None. On PostgreSQL the previous success's DELETE travels in the same statement."""
    if job.id == done.id or job.id in done.tried:
        return None  # (the success being deleted is still "ours" in this snapshot)
    parsed = accept(job)
    if not parsed:
        return None
    done.tried.add(job.id)
    claim = dict(params, id=job.id, attempts=job.attempts, now=params["locked_at"])
    if t.dialect == "postgresql" and done.deleting is not None:
        result = t.db.run(conn, t.sql.claim_if_ready_after, dict(claim, done_id=done.id)).first()
        done.deleted = bool(result[0])
        return parsed if result[1] else None
    return parsed if t.db.run(conn, t.sql.claim_if_ready, claim).rowcount == 1 else None


def scan_many(t: Tools, params: Params, accept: Accept, limit: int) -> list[JobRow]:
    """scan_one for a batch: page on until a page holds rows of ours still ready."""
    size, key = max(limit, t.config.read_ahead), dict[str, Any]()
    with t.db.connection() as conn:
        while True:
            page = [to_job(r) for r in t.db.run(
                conn, t.sql.plain.scan_after if key else t.sql.plain.scan,
                dict(params, limit=size, **key)).all()]
            ours: list[tuple[JobRow, Verdict]] = []
            for job in page:
                if len(ours) == limit:
                    break
                last = job
                parsed = accept(job)
                if parsed:
                    ours.append((job, parsed))
            mine = claim_many(t, conn, params, ours)
            if mine:
                return mine
            if len(page) < size or last.run_at is None:
                return []
            key, size = t.sql.keyset(last), min(2 * size, SCAN_PAGE_MAX)


def claim_many(t: Tools, conn: Connection, params: Params,
               ours: Sequence[tuple[JobRow, Verdict]]) -> list[JobRow]:
    """Claim rows of ours (read without a lock, with what accept made of them) in one
    statement, each only if still ready and at the attempts read; the ones claimed, in order."""
    if not ours:
        return []
    jobs = [job for job, _ in ours]
    binds = dict(params)
    for k, job in enumerate(jobs):
        binds[f"i{k}"], binds[f"a{k}"] = job.id, job.attempts
    result = t.db.run(conn, t.sql.claim_pairs(len(jobs)), binds)
    if t.dialect == "postgresql":
        claimed = {r[0] for r in result.all()}
    elif result.rowcount == len(jobs):
        claimed = {j.id for j in jobs}
    else:  # lost some to other workers: which?
        claimed = {r[0] for r in t.db.run(conn, t.sql.claimed_ids, {
            "ids": [j.id for j in jobs], "me": params["me"],
            "locked_at": params["locked_at"]}).all()}
    return [locked(j, params["locked_at"], params["me"], parsed)
            for j, parsed in ours if j.id in claimed]
