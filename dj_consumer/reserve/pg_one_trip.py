"""skip_locked on PostgreSQL in one round trip: the whole reserve is one statement.

Why: Rails' default_sql costs two round trips per job here (read read_ahead candidates,
then claim one, the previous success's DELETE riding with the claim), and the client
spends as much CPU reading five candidate rows and sending two statements as on the rest of
the job. One statement does it all: DELETE the previous success (`done`), lock the next ready
row FOR UPDATE SKIP LOCKED (`next`: the snapshot still holds the row being deleted, and
ready includes rows locked by us, so it is excluded by id), UPDATE it only if its handler
begins the way Psych writes one of our names (`{sure}`, ruby_yaml.sure_prefixes, and not
while claims are paused), and return one row: how many rows the DELETE and the UPDATE
touched, and the row found. A row it did not claim (a `.delay` job, a look-alike, another
worker's name) was held only while the statement ran; the client parses it and claims it
afterwards only if it is ours and still ready (Rails' default_sql claim), as on MySQL
(mysql_script.py). `:id` 0 (no success to delete) deletes nothing and excludes nothing.
"""

from __future__ import annotations

from sqlalchemy.sql.elements import TextClause

from dj_consumer.db import _RowTuple
from dj_consumer.reserve.base import SCAN, Accept, Done, Found, Params, Tools, locked, to_job
from dj_consumer.reserve.skip_locked import SkipLocked
from dj_consumer.sql import ReserveSQL, Statements, statement

#: {table}, {owned} (the locked_by test), {sure} and {ready} come from Statements.
ONE_TRIP = """\
WITH done AS (
  DELETE FROM {table} WHERE id = :id AND {owned} RETURNING id
), next AS (
  SELECT id, priority, attempts, handler, run_at, queue, (:claim_sure = 1 AND ({sure})) AS sure
  FROM {table} WHERE {ready} AND id <> :id
  ORDER BY priority ASC, run_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE {table} SET locked_at = :locked_at, locked_by = :me
  FROM next WHERE {table}.id = next.id AND next.sure RETURNING {table}.id
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM claimed),
  next.id, next.priority, next.attempts, next.handler, next.run_at, next.queue
FROM (SELECT 1) AS one LEFT JOIN next ON true"""


def one_trip(sql: Statements, ready: ReserveSQL) -> TextClause:
    """ONE_TRIP for these statements and this ready clause (plain or past the backlog mark)."""
    return statement(ONE_TRIP.format(table=sql.table, owned=sql.owned, sure=sql.sure,
                                     ready=ready.where))


class PostgresOneTrip(SkipLocked):
    """`one` as ONE_TRIP; `many` as SkipLocked's."""

    def __init__(self, tools: Tools) -> None:
        super().__init__(tools)
        self._stmts: dict[ReserveSQL, TextClause] = {}

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        deleting = done.deleting
        binds = dict(params, id=deleting or 0, claim_sure=int(not t.claims_paused()))
        with t.db.connection() as conn:
            out = t.db.run(conn, self._stmt(sql), binds, t.sql.constants).first()
            if deleting is not None:
                done.deleted = out[0] == 1
            if out[2] is None:
                return None
            job = to_job(_RowTuple(out[2:]))
            claimed = out[1] == 1
            try:
                ours = accept(job)
            except Exception:  # a parser bug: a row claimed before parsing must not stay ours
                if claimed:
                    t.db.run(conn, t.sql.unclaim, {"id": job.id, "me": me})
                raise
            if ours and not claimed:
                done.tried.add(job.id)
                claimed = t.db.run(conn, t.sql.claim_if_ready, dict(
                    params, id=job.id, attempts=job.attempts, now=locked_at)).rowcount == 1
            if ours and claimed:
                return locked(job, locked_at, me, ours)
            if claimed:
                t.db.run(conn, t.sql.unclaim, {"id": job.id, "me": me})
                t.not_ours_after_all(job.id)
        return SCAN

    def _stmt(self, ready: ReserveSQL) -> TextClause:
        stmt = self._stmts.get(ready)
        if stmt is None:
            if len(self._stmts) > 2:  # the statements were rebuilt (set_name_filters)
                self._stmts.clear()
            stmt = self._stmts[ready] = one_trip(self.t.sql, ready)
        return stmt
