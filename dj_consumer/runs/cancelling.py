"""Cancel one job: delete (or fail) it while it waits, or ask its worker to stop it.

All in the caller's transaction. The job's row is read FOR UPDATE where the database has it;
the delete (or fail) is fenced anyway — `failed_at IS NULL AND (locked_at IS NULL OR
locked_at < now - max_run_time)` — so on SQLite too a job a worker has just locked is never
deleted under it: the cancel then becomes a request.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from dj_consumer.runs import sql as q
from dj_consumer.runs.store import RunsStore

if TYPE_CHECKING:
    from dj_consumer.runs.api import Cancelled


def cancel(conn: Connection, store: RunsStore | None, tables: RunsStore, job_id: int, *,
           keep: bool, now: datetime, horizon: timedelta) -> Cancelled:
    from dj_consumer.runs.api import Cancelled

    lock = "" if tables.dialect == "sqlite" else " FOR UPDATE"
    row = conn.execute(tables.statement(q.JOB_ROW, for_update=lock),
                       {"run_job_id": job_id}).mappings().first()
    if row is None:
        run = store.get(conn, job_id) if store is not None else None
        if run is not None and run.finished:
            return Cancelled(job_id, "finished", f"job {job_id} already {run.state}; nothing "
                             "to cancel", run)
        return Cancelled(job_id, "missing", f"there is no job {job_id}", run)
    if row["failed_at"] is not None:
        return Cancelled(job_id, "already_failed", f"job {job_id} has already failed (at "
                         f"{row['failed_at']:%Y-%m-%d %H:%M:%S}); `dj-consumer failed delete "
                         f"{job_id}` removes it")
    params = {"run_job_id": job_id, "run_now": tables.ts(now),
              "run_horizon": tables.ts(now - horizon)}
    if not _live(row, now - horizon):
        done = conn.execute(tables.statement(q.CANCEL_KEEP if keep else q.CANCEL_DELETE),
                            params).rowcount == 1
        if done:
            return _cancelled(conn, store, row, job_id, keep=keep, now=now)
        row = conn.execute(tables.statement(q.JOB_ROW, for_update=lock),
                           {"run_job_id": job_id}).mappings().first() or row
    return _request(conn, store, row, job_id, now=now)


def _live(row: Any, horizon: datetime) -> bool:
    return row["locked_by"] is not None and row["locked_at"] is not None \
        and row["locked_at"] >= horizon


def _cancelled(conn: Connection, store: RunsStore | None, row: Any, job_id: int, *,
               keep: bool, now: datetime) -> Cancelled:
    from dj_consumer.runs.api import Cancelled, job_name

    outcome = "failed" if keep else "deleted"
    what = "kept as failed (last_error 'cancelled')" if keep else "deleted"
    run = None
    if store is not None:
        conn.execute(store.statement(q.MARK_CANCELLED), {
            "run_job_id": job_id, "run_name": job_name(row["handler"])[:255],
            "run_queue": row["queue"], "run_attempts": row["attempts"], "run_result": None,
            "run_error_class": None, "run_error_message": "cancelled",
            "run_finished_at": store.ts(now), "run_now": store.ts(now),
        })
        run = store.get(conn, job_id)
    return Cancelled(job_id, outcome, f"job {job_id} was waiting: {what}"
                     + ("; its run record says cancelled" if store is not None else ""), run)


def _request(conn: Connection, store: RunsStore | None, row: Any, job_id: int, *,
             now: datetime) -> Cancelled:
    from dj_consumer.runs.api import Cancelled, job_name

    holder = row["locked_by"]
    if store is None:
        return Cancelled(job_id, "running_untracked", f"job {job_id} is running ({holder}); "
                         "asking it to stop needs the run records table (`dj-consumer schema "
                         "--create --runs`)")
    conn.execute(store.statement(q.REQUEST_CANCEL), {
        "run_job_id": job_id, "run_name": job_name(row["handler"])[:255],
        "run_queue": row["queue"], "run_attempts": row["attempts"], "run_locked_by": holder,
        "run_now": store.ts(now),
    })
    return Cancelled(job_id, "requested", f"job {job_id} is running ({holder}): cancel "
                     "requested (cancel_requested_at set; its handler sees j.cancelled)",
                     store.get(conn, job_id))
