"""The operator's statements (`dj-consumer jobs|failed|status|check`), each whole, with its intent.

`{table}` is the quoted table name, written in once per Admin. Filters are binds, never SQL
text: a filter left out is a bind that matches everything (`:any_queue = 1`, `name_like '%'`).
A lock counts as live while `locked_at >= :horizon` (now - max_run_time), Ruby's rule.
"""

from __future__ import annotations

#: The rows a listing, a count or a bulk retry/delete is about: queue (`:any_queue`, or
#: `:queue`, or the nil queue with `:nil_queue`), a LIKE on the handler that a --name filter
#: narrows by (re-checked by parsing), text the handler contains (the dashboard's search),
#: failures since a time, and one state.
MATCHING = """
    (:any_queue = 1 OR queue = :queue OR (:nil_queue = 1 AND queue IS NULL))
    AND handler LIKE :name_like ESCAPE '!'
    AND handler LIKE :text_like ESCAPE '!'
    AND (:any_time = 1 OR failed_at >= :since)
    AND (:all_states = 1
      OR (:failed = 1 AND failed_at IS NOT NULL)
      OR (:running = 1 AND failed_at IS NULL AND locked_by IS NOT NULL AND locked_at >= :horizon)
      OR (:ready = 1 AND failed_at IS NULL AND run_at <= :now
          AND (locked_at IS NULL OR locked_at < :horizon))
      OR (:scheduled = 1 AND failed_at IS NULL AND (run_at > :now OR run_at IS NULL)
          AND (locked_at IS NULL OR locked_at < :horizon)))
"""

#: list_jobs — one page of matching rows, in the order workers take them.
LIST_JOBS = f"""
SELECT id, priority, attempts, handler, run_at, queue, locked_at, locked_by, failed_at,
       SUBSTR(last_error, 1, 500) AS error_head
FROM {{table}}
WHERE {MATCHING}
ORDER BY priority, run_at, id
LIMIT :limit
"""

#: list_failed — one page of matching rows, the latest failure first.
LIST_FAILED = f"""
SELECT id, priority, attempts, handler, run_at, queue, locked_at, locked_by, failed_at,
       SUBSTR(last_error, 1, 500) AS error_head
FROM {{table}}
WHERE {MATCHING}
ORDER BY failed_at DESC, id DESC
LIMIT :limit
"""

#: count_matching — how many rows match (without a --name filter: exact in one statement).
COUNT_MATCHING = f"SELECT COUNT(*) FROM {{table}} WHERE {MATCHING}"

#: candidates — the next batch (by id) of matching rows with their handlers, for a --name
#: filter to parse; keyset-paged, so no server-side cursor or long read is needed.
CANDIDATES = f"""
SELECT id, priority, run_at, failed_at, handler FROM {{table}}
WHERE {MATCHING} AND id > :after
ORDER BY id
LIMIT :batch
"""

#: matching_ids — every matching id, for a bulk retry or delete without a --name filter.
MATCHING_IDS = f"SELECT id FROM {{table}} WHERE {MATCHING} ORDER BY id"

#: scan_page — the dashboard's listing: matching rows in one window of ids (:floor <= id <
#: :before), newest first, at most :limit. The window bounds the rows a page reads whatever
#: the filter (a primary-key range: no filter needs an index), so a sparse filter on a large
#: table costs a few windows, never a pass over the table. Handlers come cut at :head
#: characters: a page of 50 rows never carries 50 large handlers.
SCAN_PAGE = f"""
SELECT id, priority, attempts, SUBSTR(handler, 1, :head) AS handler, run_at, queue, locked_at,
       locked_by, failed_at, SUBSTR(last_error, 1, 500) AS error_head
FROM {{table}}
WHERE {MATCHING} AND id < :before AND id >= :floor
ORDER BY id DESC
LIMIT :limit
"""

#: backlog_at_least — are there at least :rows unfinished rows? Reads at most that many.
BACKLOG_AT_LEAST = """
SELECT COUNT(*) FROM (SELECT 1 AS one FROM {table} WHERE failed_at IS NULL LIMIT :rows) AS backlog
"""

#: get_rows — whole rows by id (a page after a --name filter, `failed show`).
GET_ROWS = """
SELECT id, priority, attempts, handler, run_at, queue, locked_at, locked_by, failed_at,
       last_error AS error_head, created_at, updated_at
FROM {table}
WHERE id IN :ids
ORDER BY priority, run_at, id
"""

#: Not while a worker holds it: a failed row's lock is the failed run's own (Ruby keeps
#: locked_by when it fails a job) or stale, or the row is left alone.
_NOT_LIVE = "(locked_at IS NULL OR locked_at <= failed_at OR locked_at < :horizon)"

#: retry_failed — run failed rows again now, as Rails admins reset them: attempts 0,
#: failed_at and last_error cleared, unlocked.
RETRY_FAILED = f"""
UPDATE {{table}}
SET attempts = 0, failed_at = NULL, last_error = NULL, run_at = :now,
    locked_at = NULL, locked_by = NULL, updated_at = :now
WHERE id IN :ids AND failed_at IS NOT NULL AND {_NOT_LIVE}
"""

#: delete_failed — remove failed rows for good.
DELETE_FAILED = f"""
DELETE FROM {{table}}
WHERE id IN :ids AND failed_at IS NOT NULL AND {_NOT_LIVE}
"""

# status — one pass over the whole table, grouped by queue, the handler lines that decide its
# job's name (the first line; for ActiveJob the job_class line; for `.delay` the receiver line
# and method_name), failed or not, due or not, and the live lock's holder. MIN(id) of a group
# is a sample row whose handler the caller parses to name the group. Rails' schema has no index
# that covers a handler, so this reads every row once (docs/commands.md "dj-consumer status"); on MySQL
# the caller runs it over a few primary-key ranges at once (the server gives each statement one
# thread), and on PostgreSQL the planner runs it in parallel itself. The wrapper beginnings are
# binds (:wrapper, :performable): they hold colons.
WRAPPER = "--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper"
PERFORMABLE = "--- !ruby/object:Delayed::Performable"
_STATE = """
       failed_at IS NOT NULL AS failed,
       run_at <= :now AS due,
       CASE WHEN failed_at IS NULL AND locked_at >= :horizon THEN locked_by END AS holder,
       COUNT(*) AS n, MIN(run_at) AS first_run_at, MIN(locked_at) AS first_locked_at,
       MIN(id) AS sample"""

#: status on MySQL/MariaDB: the name lines hashed (CRC32), so the group key is an integer.
STATUS_MYSQL = f"""
SELECT queue,
       CRC32(CASE
         WHEN LEFT(handler, {len(WRAPPER)}) = :wrapper
           THEN SUBSTRING_INDEX(LEFT(handler, 300), CHAR(10), 3)
         WHEN LEFT(handler, {len(PERFORMABLE)}) = :performable
           THEN CONCAT(SUBSTRING_INDEX(LEFT(handler, 300), CHAR(10), 2), CHAR(10),
                       SUBSTRING_INDEX(SUBSTRING_INDEX(handler, CONCAT(CHAR(10), 'method_name: '),
                                                       -1), CHAR(10), 1))
         ELSE SUBSTRING_INDEX(LEFT(handler, 200), CHAR(10), 1)
       END) AS name_key,{_STATE}
FROM {{table}}
WHERE id BETWEEN :first_id AND :last_id
GROUP BY queue, name_key, failed, due, holder
ORDER BY NULL
"""

#: status on PostgreSQL: the name lines by regular expression.
STATUS_POSTGRESQL = f"""
SELECT queue,
       CASE
         WHEN left(handler, {len(WRAPPER)}) = :wrapper
           THEN substring(handler from E'\\n  job_class: [^\\n]*')
         WHEN left(handler, {len(PERFORMABLE)}) = :performable
           THEN split_part(left(handler, 300), E'\\n', 2)
                || substring(handler from E'\\nmethod_name: [^\\n]*')
         ELSE split_part(left(handler, 200), E'\\n', 1)
       END AS name_key,{_STATE}
FROM {{table}}
WHERE id BETWEEN :first_id AND :last_id
GROUP BY queue, name_key, failed, due, holder
"""

#: status on SQLite: the name lines with instr/substr (no regular expressions); the inner
#: select names the text after each marker, the outer cuts it at the end of its line.
STATUS_SQLITE = f"""
SELECT queue,
       CASE
         WHEN substr(handler, 1, {len(WRAPPER)}) = :wrapper
           THEN substr(aj, 1, instr(aj || char(10), char(10)) - 1)
         WHEN substr(handler, 1, {len(PERFORMABLE)}) = :performable
           THEN substr(body, 1, instr(body || char(10), char(10)) - 1) || char(10)
                || substr(meth, 1, instr(meth || char(10), char(10)) - 1)
         ELSE substr(handler, 1, instr(handler || char(10), char(10)) - 1)
       END AS name_key,{_STATE}
FROM (SELECT t.*, substr(handler, instr(handler, 'job_class: ')) AS aj,
             substr(handler, instr(handler, char(10)) + 1) AS body,
             substr(handler, instr(handler, 'method_name: ')) AS meth
      FROM {{table}} AS t WHERE id BETWEEN :first_id AND :last_id) AS t
GROUP BY queue, name_key, failed, due, holder
"""

#: id_range — the first and last id, to split the status pass into primary-key ranges.
ID_RANGE = "SELECT MIN(id) AS first_id, MAX(id) AS last_id FROM {table}"

#: sample_handlers — the handlers that name status groups.
SAMPLE_HANDLERS = "SELECT id, handler FROM {table} WHERE id IN :ids"

#: db_now — the database's clock, UTC, to measure this host's skew against.
DB_NOW = {
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "postgresql": "SELECT (now() AT TIME ZONE 'utc')",
    "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
}
