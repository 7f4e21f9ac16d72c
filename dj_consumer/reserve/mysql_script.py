"""skip_locked on MySQL/MariaDB in one round trip: the whole reserve is one script.

Why a script: on MySQL a SKIP LOCKED reserve is START TRANSACTION, DELETE the previous
success, SELECT … FOR UPDATE SKIP LOCKED, UPDATE, COMMIT: five round trips, each a client
wake-up. Sent as one multi-statement (CLIENT.MULTI_STATEMENTS), they cost one. The row the
SELECT finds is kept in session variables (@dj_*), so the UPDATE needs no second read and
the last SELECT returns it, with how many rows the DELETE and the UPDATE touched, without
touching the table. The UPDATE claims the row only if its handler begins the way Psych
writes one of our names (`{sure}`, ruby_yaml.sure_prefixes, and not while claims are
paused): any other row is left unlocked, parsed by the client, and claimed afterwards only
if it is ours and still ready (Rails' default_sql claim). `@dj_id = NULL` before the SELECT
makes "no row" read as NULL rather than the previous reserve's row, and `id = NULL` (no
success to delete) deletes nothing. On MariaDB the script travels as one compound statement,
BEGIN NOT ATOMIC … END, whose reply is one packet (Connections.run_script).

While the server runs the COMMIT, the client already reads the result row: the previous
success is settled (its log line) and the row parsed then (`on_rows`), not after; the COMMIT
leaves the client about 200 µs for it (`python -m benchmarks.profile --split`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from dj_consumer.db import _RowTuple
from dj_consumer.reserve.base import SCAN, Accept, Done, Found, Params, Tools, locked, to_job
from dj_consumer.reserve.skip_locked import SkipLocked
from dj_consumer.run import Extra
from dj_consumer.sql import ReserveSQL, Statements, statement

#: {table}, {owned} (the byte-exact locked_by test), {sure} and {ready} come from Statements.
SCRIPT = """\
START TRANSACTION;
DELETE FROM {table} WHERE id = :id AND {owned};
SET @dj_deleted = ROW_COUNT(), @dj_id = NULL;
SELECT id, priority, attempts, handler, run_at, queue, :claim_sure = 1 AND ({sure})
  INTO @dj_id, @dj_priority, @dj_attempts, @dj_handler, @dj_run_at, @dj_queue, @dj_sure
  FROM {table} WHERE {ready}
  ORDER BY priority ASC, run_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED;
UPDATE {table} SET locked_at = :locked_at, locked_by = :me WHERE id = @dj_id AND @dj_sure;
SELECT @dj_deleted, ROW_COUNT(), @dj_id, @dj_priority, @dj_attempts, @dj_handler,
  CAST(@dj_run_at AS DATETIME(6)), @dj_queue;
COMMIT"""
# (A user variable holds a DATETIME as a string, on MySQL 8 a binary one: cast back.)

# A success with an outcome participant's statements (run.Extra: run records) sends them
# between the last SELECT and the COMMIT; they read @dj_deleted, so each writes nothing
# unless the DELETE took the row. Without a reserve to ride with (a stop), DELETE_WITH.
COMMIT = "COMMIT"
DELETE_WITH = """START TRANSACTION;
DELETE FROM {table} WHERE id = :id AND {owned};
SET @dj_deleted = ROW_COUNT()"""


def script(sql: Statements, ready: ReserveSQL) -> TextClause:
    """SCRIPT for these statements and this ready clause (plain or past the backlog mark)."""
    return statement(SCRIPT.format(table=sql.table, owned=sql.owned, sure=sql.sure, ready=ready.where))


def delete_with(t: Tools, job_id: int, me: str, extra: Extra) -> bool:
    """A success's fenced DELETE and `extra` in one transaction and round trip; whether the
    row was still ours. A failure closes the connection (Connections.connection): rolled back."""
    stmts, binds = extra
    key = (t.sql.table, t.sql.owned)
    head = _DELETE_WITH.get(key)
    if head is None:
        head = _DELETE_WITH[key] = statement(DELETE_WITH.format(table=key[0], owned=key[1]))
    with t.db.connection() as conn:
        results = t.db.run_script(conn, [head, *stmts, _COMMIT], {**binds, "id": job_id, "me": me})
    return bool(results[1].rowcount == 1)


_DELETE_WITH: dict[tuple[str, str], TextClause] = {}  # one per table (statements are cached by identity)
_COMMIT = statement(COMMIT)


class MySQLScript(SkipLocked):
    """`one` as SCRIPT; `many` as SkipLocked's."""

    folds_extras = True

    def __init__(self, tools: Tools) -> None:
        super().__init__(tools)
        self._scripts: dict[tuple[ReserveSQL, bool], TextClause] = {}

    def one(self, params: Params, accept: Accept, sql: ReserveSQL, done: Done) -> Found:
        """A row the script did not claim (a `.delay` job, a look-alike) is checked by
        `accept` first and then claimed only if it is still ready; one it did claim is
        re-checked and, if not ours after all (hand-written YAML), handed straight back."""
        t, me, locked_at = self.t, params["me"], params["locked_at"]
        deleting = done.deleting
        got: dict[str, Any] = {}  # the script's one row, as a job, and what accept made of it

        def check(result: Any) -> None:  # while the server commits
            out = got["out"] = result.first()
            if done.finished is not None and deleting is not None and out[0] == 1:
                done.finished.settle(True)  # its log line now (job.lock_lost asks the database)
            job = got["job"] = None if out[2] is None else to_job(_RowTuple(out[2:]))
            got["ours"] = None if job is None else accept(job)

        binds = dict(params, id=deleting, claim_sure=int(not t.claims_paused()))
        extra = done.extra if deleting is not None else None
        stmts = [self._script(sql)]
        if extra is not None:  # run.Extra, before the COMMIT
            stmts = [self._script(sql, commit=False), *extra[0], _COMMIT]
            binds.update(extra[1])
        with t.db.connection() as conn:
            try:
                t.db.run_script(conn, stmts, binds, t.sql.constants,
                                block=t.mariadb, on_rows=check)
            except SQLAlchemyError:
                raise  # the script did not commit: nothing of it is left behind
            except Exception:
                # check() failed (a parser bug, say) while the server claimed and committed
                # the row: hand it back, or it stays locked by us.
                if got.get("job") is not None and got["out"][1] == 1:
                    t.db.run(conn, t.sql.unclaim, {"id": got["job"].id, "me": me})
                raise
            out, job = got["out"], got["job"]
            if deleting is not None:
                done.deleted = out[0] == 1
            if job is None:
                return None
            claimed = out[1] == 1
            if got["ours"] and not claimed:
                done.tried.add(job.id)
                claimed = t.db.run(conn, t.sql.claim_if_ready, dict(
                    params, id=job.id, attempts=job.attempts, now=locked_at)).rowcount == 1
            if got["ours"] and claimed:
                return locked(job, locked_at, me, got["ours"])
            if claimed:
                t.db.run(conn, t.sql.unclaim, {"id": job.id, "me": me})
                t.not_ours_after_all(job.id)
        return SCAN

    def _script(self, ready: ReserveSQL, *, commit: bool = True) -> TextClause:
        stmt = self._scripts.get((ready, commit))
        if stmt is None:
            if len(self._scripts) > 4:  # the statements were rebuilt (set_name_filters)
                self._scripts.clear()
            stmt = script(self.t.sql, ready)
            if not commit:  # SCRIPT without its last statement, the COMMIT
                stmt = statement(str(stmt.text).rsplit(";", 1)[0])
            self._scripts[(ready, commit)] = stmt
        return stmt
