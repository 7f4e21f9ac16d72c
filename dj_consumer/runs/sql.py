"""The run records' and batches' statements, each whole, under a name and one line of intent.

`{runs}`, `{jobs}`, `{batches}` and `{parts}` are the quoted table names, written in once per
RunsStore. Every bind starts with `run_`, so a statement can travel in one script with the
row protocol's own (`:id`, `:me`, `:now` …) without a name meaning two things. Where the
dialects differ (upserts, DELETE … LIMIT) a statement is a dict by dialect.
"""

from __future__ import annotations

FINAL = "('succeeded', 'failed', 'cancelled')"
UNFINISHED = "('running', 'rescheduled', 'interrupted')"

# -- the worker's writes -------------------------------------------------------------------------

_START_INSERT = """
INSERT INTO {runs} (job_id, name, queue, state, attempts, run_key, owner_id, batch_id,
                    batch_index, locked_by, started_at, created_at, updated_at)
VALUES (:run_job_id, :run_name, :run_queue, 'running', :run_attempts, :run_key, :run_owner_id,
        :run_batch_id, :run_batch_index, :run_locked_by, :run_now, :run_now, :run_now)
"""
# A record in a final state belongs to a finished run: the id was reused, or an operator ran a
# failed job again. Its cancel request, progress, checkpoint and keys are not this run's. A
# record in any other state is this job's own from an earlier attempt (or written by Rails
# before it started): its cancel request, keys, progress and checkpoint carry on.
# MySQL applies ON DUPLICATE KEY UPDATE's assignments left to right, each seeing the ones
# before: every assignment that reads the old `state` comes before `state` itself.
_START_SET = """
    cancel_requested_at = CASE WHEN {runs}.state IN {final} THEN NULL
                               ELSE {runs}.cancel_requested_at END,
    run_key = CASE WHEN {runs}.state IN {final} THEN {new}run_key
                   ELSE COALESCE({new}run_key, {runs}.run_key) END,
    owner_id = CASE WHEN {runs}.state IN {final} THEN {new}owner_id
                    ELSE COALESCE({new}owner_id, {runs}.owner_id) END,
    progress_current = CASE WHEN {runs}.state IN {final} THEN NULL ELSE {runs}.progress_current END,
    progress_total = CASE WHEN {runs}.state IN {final} THEN NULL ELSE {runs}.progress_total END,
    progress_stage = CASE WHEN {runs}.state IN {final} THEN NULL ELSE {runs}.progress_stage END,
    checkpoint = CASE WHEN {runs}.state IN {final} THEN NULL ELSE {runs}.checkpoint END,
    created_at = CASE WHEN {runs}.state IN {final} THEN {new}created_at ELSE {runs}.created_at END,
    name = {new}name, queue = {new}queue, attempts = {new}attempts,
    batch_id = {new}batch_id, batch_index = {new}batch_index, locked_by = {new}locked_by,
    started_at = {new}started_at, finished_at = NULL, result = NULL, error_class = NULL,
    error_message = NULL, updated_at = {new}updated_at,
    state = 'running'
"""


def _upsert(insert: str, assignments: str) -> dict[str, str]:
    """One upsert per dialect: PostgreSQL and SQLite read the new values as `excluded.x`,
    MySQL/MariaDB as `VALUES(x)` (MariaDB has no row alias)."""
    pg = assignments.replace("{new}", "excluded.").replace("{final}", FINAL)
    my = _values(assignments).replace("{final}", FINAL)
    return {
        "postgresql": f"{insert}ON CONFLICT (job_id) DO UPDATE SET {pg}",
        "sqlite": f"{insert}ON CONFLICT (job_id) DO UPDATE SET {pg}",
        "mysql": f"{insert}ON DUPLICATE KEY UPDATE {my}",
    }


def _values(assignments: str) -> str:
    import re

    return re.sub(r"\{new\}(\w+)", r"VALUES(\1)", assignments)


#: start — an attempt begins: the record (created if missing) says running, by whom, since when.
START = _upsert(_START_INSERT, _START_SET)

#: progress — the handler's progress; None keeps a total or stage. Only while running, so a
#: late write never changes a finished record.
PROGRESS = """
UPDATE {runs}
SET progress_current = :run_current, progress_total = COALESCE(:run_total, progress_total),
    progress_stage = COALESCE(:run_stage, progress_stage), updated_at = :run_now
WHERE job_id = :run_job_id AND state = 'running'
"""

#: save_checkpoint — what this attempt keeps for the next one (JSON), e.g. the steps done.
SAVE_CHECKPOINT = """
UPDATE {runs} SET checkpoint = :run_checkpoint, updated_at = :run_now
WHERE job_id = :run_job_id
"""

_FINISH_INSERT = """
INSERT INTO {runs} (job_id, name, queue, state, attempts, result, error_class, error_message,
                    finished_at, created_at, updated_at)
VALUES (:run_job_id, :run_name, :run_queue, :run_state, :run_attempts, :run_result,
        :run_error_class, :run_error_message, :run_finished_at, :run_now, :run_now)
"""
_FINISH_SET = """
    attempts = {new}attempts, result = {new}result, error_class = {new}error_class,
    error_message = {new}error_message, finished_at = {new}finished_at, locked_by = NULL,
    updated_at = {new}updated_at, state = {new}state
"""
#: finish — the attempt's outcome, in the caller's transaction (the one that writes the job's
#: outcome, so a Rails reader never sees the job gone without its final record). Created if
#: missing (the table appeared mid-run, or start's write was lost).
FINISH = _upsert(_FINISH_INSERT, _FINISH_SET)

# A success on MySQL/MariaDB (runs/tracking.py): FINISH_IF_DELETED (or, when the attempt's
# `running` write had not gone out yet, STARTED_SUCCEEDED_IF_DELETED) follows its fenced
# DELETE and `SET @dj_deleted = ROW_COUNT()` in one script and transaction — the next reserve's
# (reserve/mysql_script.py), or their own (Store.delete_with). Nothing is written to the
# record unless the DELETE took the row, as the outcome's own fence says.

#: finish_if_deleted — FINISH, writing nothing unless the DELETE took the row.
FINISH_IF_DELETED = f"""
INSERT INTO {{runs}} (job_id, name, queue, state, attempts, result, error_class, error_message,
                    finished_at, created_at, updated_at)
SELECT :run_job_id, :run_name, :run_queue, :run_state, :run_attempts, :run_result,
       :run_error_class, :run_error_message, :run_finished_at, :run_now, :run_now FROM DUAL
WHERE @dj_deleted = 1
ON DUPLICATE KEY UPDATE {_values(_FINISH_SET)}
"""

_MY_START_KEPT = ",\n    ".join(
    line.strip().rstrip(",") for line in _values(_START_SET).replace("{final}", FINAL)
    .split(",\n") if line.strip().split(" =")[0].strip() in (
        "cancel_requested_at", "run_key", "owner_id", "progress_current", "progress_total",
        "progress_stage", "checkpoint", "created_at"))
#: started_succeeded_if_deleted — START and FINISH_IF_DELETED of a success as one upsert
#: (the server writes the row once). MySQL applies the assignments left to right:
#: those that read the old `state` come first, `state` last.
STARTED_SUCCEEDED_IF_DELETED = f"""
INSERT INTO {{runs}} (job_id, name, queue, state, attempts, result, run_key, owner_id,
                    batch_id, batch_index, started_at, finished_at, created_at, updated_at)
SELECT :run_job_id, :run_name, :run_queue, 'succeeded', :run_attempts, :run_result, :run_key,
       :run_owner_id, :run_batch_id, :run_batch_index, :run_started, :run_now, :run_started,
       :run_now FROM DUAL
WHERE @dj_deleted = 1
ON DUPLICATE KEY UPDATE {_MY_START_KEPT},
    name = VALUES(name), queue = VALUES(queue), batch_id = VALUES(batch_id),
    batch_index = VALUES(batch_index), started_at = VALUES(started_at),
    attempts = VALUES(attempts), result = VALUES(result), error_class = NULL,
    error_message = NULL, finished_at = VALUES(finished_at), locked_by = NULL,
    updated_at = VALUES(updated_at), state = VALUES(state)
"""

# A success on PostgreSQL (runs/tracking.py): the fenced DELETE and the record's final write
# in ONE statement, sent with autocommit: one round trip and one commit instead of five and
# one. The INSERT reads its one row from the DELETE's RETURNING, so it writes nothing unless
# the DELETE took the row; the statement returns a row exactly then. With `running` still to
# write (START's fields: the attempt ended before the writer wrote it) the SET is START_SET's
# without what FINISH_SET sets (PostgreSQL's SET sees the old row in every assignment).
_PG_DELETED = "WITH deleted AS (DELETE FROM {jobs} WHERE id = :id AND {owned} RETURNING id)"
_PG_FINISH_SET = """
    attempts = excluded.attempts, result = excluded.result, error_class = NULL,
    error_message = NULL, finished_at = excluded.finished_at, locked_by = NULL,
    updated_at = excluded.updated_at, state = excluded.state"""
_PG_START_KEPT = ", ".join(
    line.strip().rstrip(",") for line in _START_SET.replace("{new}", "excluded.")
    .replace("{final}", FINAL).split(",\n") if line.strip().split(" =")[0].strip() in (
        "cancel_requested_at", "run_key", "owner_id", "progress_current", "progress_total",
        "progress_stage", "checkpoint", "created_at"))
#: pg_succeeded — the DELETE and the record's final state (the record's running write done).
PG_SUCCEEDED = f"""
{_PG_DELETED}
INSERT INTO {{runs}} (job_id, name, queue, state, attempts, result, finished_at, created_at,
                    updated_at)
SELECT :run_job_id, :run_name, :run_queue, 'succeeded', :run_attempts, :run_result, :run_now,
       :run_now, :run_now FROM deleted
ON CONFLICT (job_id) DO UPDATE SET {_PG_FINISH_SET}
RETURNING job_id
"""
#: pg_started_succeeded — the same with START's fields (its running write never went out).
PG_STARTED_SUCCEEDED = f"""
{_PG_DELETED}
INSERT INTO {{runs}} (job_id, name, queue, state, attempts, result, run_key, owner_id,
                    batch_id, batch_index, started_at, finished_at, created_at, updated_at)
SELECT :run_job_id, :run_name, :run_queue, 'succeeded', :run_attempts, :run_result, :run_key,
       :run_owner_id, :run_batch_id, :run_batch_index, :run_started, :run_now, :run_started,
       :run_now FROM deleted
ON CONFLICT (job_id) DO UPDATE SET {_PG_START_KEPT},
    name = excluded.name, queue = excluded.queue, batch_id = excluded.batch_id,
    batch_index = excluded.batch_index, started_at = excluded.started_at, {_PG_FINISH_SET}
RETURNING job_id
"""

#: cancel_requested — which of these running jobs has been asked to stop (one statement per
#: heartbeat for every job in hand). A final record is an earlier job's (ids reused): its
#: request is not this run's.
CANCEL_REQUESTED = f"""
SELECT job_id FROM {{runs}} WHERE job_id IN :run_ids AND cancel_requested_at IS NOT NULL
  AND state IN {UNFINISHED}
"""

_REQUEST_INSERT = """
INSERT INTO {runs} (job_id, name, queue, state, attempts, locked_by, cancel_requested_at,
                    created_at, updated_at)
VALUES (:run_job_id, :run_name, :run_queue, 'running', :run_attempts, :run_locked_by, :run_now,
        :run_now, :run_now)
"""
_REQUEST_SET = """
    cancel_requested_at = COALESCE({runs}.cancel_requested_at, {new}cancel_requested_at),
    updated_at = {new}updated_at
"""
#: request_cancel — a running job is asked to stop (the worker makes j.cancelled true).
REQUEST_CANCEL = _upsert(_REQUEST_INSERT, _REQUEST_SET)

#: mark_cancelled — a waiting job was cancelled: its record says so (created if missing).
MARK_CANCELLED = _upsert(_FINISH_INSERT.replace(":run_state", "'cancelled'"), _FINISH_SET)

#: prune_final — one small batch of final records older than the retention. The
#: (state, updated_at) index finds them; small batches keep every lock short.
PRUNE_FINAL = {
    "mysql": f"""
DELETE FROM {{runs}} WHERE state IN {FINAL} AND updated_at < :run_cutoff
LIMIT :run_limit
""",
    "other": f"""
DELETE FROM {{runs}} WHERE job_id IN (
    SELECT job_id FROM {{runs}} WHERE state IN {FINAL} AND updated_at < :run_cutoff
    LIMIT :run_limit)
""",
}

#: prune_orphans — records never finished (a worker died, then Rails deleted the job) older
#: than the retention, whose job is gone.
PRUNE_ORPHANS = {
    "mysql": f"""
DELETE FROM {{runs}} WHERE state IN {UNFINISHED} AND updated_at < :run_cutoff
  AND NOT EXISTS (SELECT 1 FROM {{jobs}} WHERE {{jobs}}.id = {{runs}}.job_id)
LIMIT :run_limit
""",
    "other": f"""
DELETE FROM {{runs}} WHERE job_id IN (
    SELECT job_id FROM {{runs}} WHERE state IN {UNFINISHED} AND updated_at < :run_cutoff
      AND NOT EXISTS (SELECT 1 FROM {{jobs}} WHERE {{jobs}}.id = {{runs}}.job_id)
    LIMIT :run_limit)
""",
}

#: old_batches — completed batches older than the retention (their parts go with them).
OLD_BATCHES = """
SELECT batch_id FROM {batches} WHERE completed_at < :run_cutoff LIMIT :run_limit
"""
DELETE_PARTS = "DELETE FROM {parts} WHERE batch_id IN :run_batch_ids"
DELETE_BATCHES = "DELETE FROM {batches} WHERE batch_id IN :run_batch_ids"

# -- reads -----------------------------------------------------------------------------------------

RUN_COLUMNS = """job_id, name, queue, state, attempts, progress_current, progress_total,
       progress_stage, result, checkpoint, error_class, error_message, run_key, owner_id,
       batch_id, batch_index, locked_by, started_at, finished_at, cancel_requested_at,
       created_at, updated_at"""

#: get_run — one record by its job id (the primary key).
GET_RUN = f"SELECT {RUN_COLUMNS} FROM {{runs}} WHERE job_id = :run_job_id"

#: find_runs — records by the filters given (each one a fixed fragment below, ANDed), the
#: latest first. run_key and owner_id have their own index.
FIND_RUNS = f"""
SELECT {RUN_COLUMNS} FROM {{runs}}
WHERE {{where}}
ORDER BY updated_at DESC, job_id DESC
LIMIT :run_limit
"""
FIND_FILTERS = {
    "run_key": "run_key = :run_key",
    "owner_id": "owner_id = :run_owner_id",
    "state": "state = :run_state",
    "name": "name = :run_name",
    "batch_id": "batch_id = :run_batch_id",
}

#: job_row — the delayed_jobs row a cancel is about, locked (where the database can) so a
#: worker cannot take it between our look and our write.
JOB_ROW = """
SELECT id, handler, queue, attempts, locked_by, locked_at, failed_at FROM {jobs}
WHERE id = :run_job_id{for_update}
"""
JOB_EXISTS = "SELECT id FROM {jobs} WHERE id = :run_job_id"

#: Not held by a live worker: unlocked, or its lock older than max_run_time (Ruby's horizon).
_WAITING = "failed_at IS NULL AND (locked_at IS NULL OR locked_at < :run_horizon)"

#: cancel_delete — a waiting job goes away; fenced, so a job a worker just took stays.
CANCEL_DELETE = f"DELETE FROM {{jobs}} WHERE id = :run_job_id AND {_WAITING}"

#: cancel_keep — a waiting job fails for good with last_error "cancelled", attempts unchanged.
CANCEL_KEEP = f"""
UPDATE {{jobs}}
SET failed_at = :run_now, last_error = 'cancelled', locked_at = NULL, locked_by = NULL,
    updated_at = :run_now
WHERE id = :run_job_id AND {_WAITING}
"""

# -- batches -----------------------------------------------------------------------------------

#: insert_batch — the batch record, before its parts are enqueued.
INSERT_BATCH = """
INSERT INTO {batches} (batch_id, name, queue, on_complete, total, total_batches, done_batches,
                       processed, skipped, errored, created_at, updated_at)
VALUES (:run_batch_id, :run_name, :run_queue, :run_on_complete, :run_total, :run_parts, 0, 0, 0,
        0, :run_now, :run_now)
"""

#: insert_job — a delayed_jobs row as Delayed::Job.enqueue writes it (a part, or on_complete).
INSERT_JOB = {
    "postgresql": """
INSERT INTO {jobs} (priority, attempts, handler, run_at, queue, created_at, updated_at)
VALUES (:run_priority, 0, :run_handler, :run_now, :run_queue, :run_now, :run_now)
RETURNING id
""",
    "other": """
INSERT INTO {jobs} (priority, attempts, handler, run_at, queue, created_at, updated_at)
VALUES (:run_priority, 0, :run_handler, :run_now, :run_queue, :run_now, :run_now)
""",
}

_PART_VALUES = """ INTO {parts} (batch_id, batch_index, job_id, processed, skipped, errored,
                         error_items, finished_at)
VALUES (:run_batch_id, :run_batch_index, :run_job_id, :run_processed, :run_skipped, :run_errored,
        :run_error_items, :run_now)"""
#: mark_part — the part's marker and summary; inserts nothing when the part was already
#: counted (a part run again after a crash between its count and its job's delete), and never
#: raises for that, which would abort the caller's transaction.
MARK_PART = {
    "mysql": "INSERT IGNORE" + _PART_VALUES,
    "other": "INSERT" + _PART_VALUES + " ON CONFLICT (batch_id, batch_index) DO NOTHING",
}

#: add_part — the part's counts into the batch. Its row lock orders the parts that finish at
#: once: each sees the counts of those committed before it.
ADD_PART = """
UPDATE {batches}
SET done_batches = done_batches + 1, processed = processed + :run_processed,
    skipped = skipped + :run_skipped, errored = errored + :run_errored, updated_at = :run_now
WHERE batch_id = :run_batch_id
"""

#: complete_batch — true (one row) for exactly one caller: the one whose part made the count
#: whole, while it still holds the batch row's lock from add_part.
COMPLETE_BATCH = """
UPDATE {batches} SET completed_at = :run_now, updated_at = :run_now
WHERE batch_id = :run_batch_id AND done_batches >= total_batches AND completed_at IS NULL
"""

#: get_batch — the batch record.
GET_BATCH = """
SELECT batch_id, name, queue, on_complete, total, total_batches, done_batches, processed,
       skipped, errored, error_items, on_complete_job_id, completed_at, created_at, updated_at
FROM {batches} WHERE batch_id = :run_batch_id
"""

#: part_errors — the errored items of a batch's parts, in part order.
PART_ERRORS = """
SELECT error_items FROM {parts}
WHERE batch_id = :run_batch_id AND errored > 0
ORDER BY batch_index
"""

#: batch_done — the completed batch's error list and the on_complete job it enqueued.
BATCH_DONE = """
UPDATE {batches} SET error_items = :run_error_items, on_complete_job_id = :run_on_complete_id
WHERE batch_id = :run_batch_id
"""
