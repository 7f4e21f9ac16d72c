"""Batches: a list of items split into delayed_jobs rows, and the on_complete job enqueued
exactly once when the last part finishes, whichever worker (Ruby or Python) finishes it.

Each part is a row whose handler is `--- !ruby/object:NAME` with `batch_id`, `batch_index` and
`items` (Ruby loads it as NAME with those instance variables). Finishing a part, in the
finisher's own transaction: the part's marker row (a second finish of the same part counts
nothing), the counts added to the batch row (whose lock orders concurrent finishers), and the
one UPDATE that only the finisher who made the count whole can match, which then enqueues
on_complete with the batch summary as its payload. tests/interop/ruby/dj_consumer_batches.rb is
the same in Ruby.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.engine import Connection

from dj_consumer.runs import sql as q
from dj_consumer.runs.records import Batch, PartSummary, merged_errors
from dj_consumer.runs.store import RunsStore

log = structlog.get_logger(__name__)

DEFAULT_BATCH_SIZE = 100


@dataclass(frozen=True)
class BatchEnqueued:
    """The new batch's id and its parts' delayed_jobs ids, in part order."""

    batch_id: str
    job_ids: list[int]


@dataclass(frozen=True)
class PartFinished:
    """What finishing one part did: counted (False: this part was counted before), and when
    it completed the batch, the on_complete job's id (None when the batch names none)."""

    counted: bool
    completed: bool = False
    on_complete_job_id: int | None = None


def enqueue_parts(conn: Connection, store: RunsStore, name: str, items: Sequence[Any], *,
                  batch_size: int, on_complete: str | None, queue: str | None, priority: int,
                  now: datetime) -> BatchEnqueued:
    """The batch record and one delayed_jobs row per `batch_size` items, in `conn`'s
    transaction (a Rails reader sees all of them or none)."""
    from dj_consumer import ruby_yaml

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    parts = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    batch_id = str(uuid.uuid4())
    conn.execute(store.statement(q.INSERT_BATCH), {
        "run_batch_id": batch_id, "run_name": name, "run_queue": queue,
        "run_on_complete": on_complete, "run_total": len(items), "run_parts": len(parts),
        "run_now": store.ts(now)})
    job_ids = []
    for index, chunk in enumerate(parts):
        handler = ruby_yaml.dump_handler(
            name, {"batch_id": batch_id, "batch_index": index, "items": chunk}, shape="object")
        job_ids.append(insert_job(conn, store, handler, queue=queue, priority=priority, now=now))
    return BatchEnqueued(batch_id, job_ids)


def insert_job(conn: Connection, store: RunsStore, handler: str, *, queue: str | None,
               priority: int, now: datetime) -> int:
    result = conn.execute(store.statement(q.INSERT_JOB), {
        "run_handler": handler, "run_queue": queue, "run_priority": priority,
        "run_now": store.ts(now)})
    if store.dialect == "postgresql":
        return int(result.scalar_one())
    return int(result.lastrowid)


def finish_batch_part(conn: Connection, store: RunsStore, batch_id: str, index: int,
                      summary: PartSummary, *, now: datetime,
                      job_id: int | None = None) -> PartFinished:
    """Count part `index` of batch `batch_id`, in the caller's transaction (the worker's
    outcome write); the finisher of the last part enqueues on_complete, exactly once.

    Needs READ COMMITTED (MySQL's and PostgreSQL's default for our connections): the batch
    row's UPDATE must see the counts committed while it waited for the row's lock."""
    marked = conn.execute(store.statement(q.MARK_PART), {
        "run_batch_id": batch_id, "run_batch_index": index, "run_job_id": job_id,
        "run_processed": summary.processed, "run_skipped": summary.skipped,
        "run_errored": len(summary.errored), "run_error_items": summary.items_json(),
        "run_now": store.ts(now)}).rowcount
    if marked != 1:
        log.info("batch.part_counted_before", batch_id=batch_id, batch_index=index)
        return PartFinished(counted=False)
    params = {"run_batch_id": batch_id, "run_now": store.ts(now)}
    added = conn.execute(store.statement(q.ADD_PART), {
        **params, "run_processed": summary.processed, "run_skipped": summary.skipped,
        "run_errored": len(summary.errored)}).rowcount
    if added != 1:
        log.warning("batch.missing", batch_id=batch_id, batch_index=index)
        return PartFinished(counted=True)
    if conn.execute(store.statement(q.COMPLETE_BATCH), params).rowcount != 1:
        return PartFinished(counted=True)
    return _complete(conn, store, batch_id, now)


def _complete(conn: Connection, store: RunsStore, batch_id: str, now: datetime) -> PartFinished:
    """The batch's last part is in: its error list, and the on_complete job."""
    from dj_consumer import ruby_yaml

    batch = get_batch(conn, store, batch_id)
    assert batch is not None
    job_id = None
    if batch.on_complete:
        handler = ruby_yaml.dump_handler(batch.on_complete, batch.summary(), shape="object")
        job_id = insert_job(conn, store, handler, queue=batch.queue, priority=0, now=now)
    conn.execute(store.statement(q.BATCH_DONE), {
        "run_batch_id": batch_id, "run_on_complete_id": job_id,
        "run_error_items": json.dumps(batch.error_items, ensure_ascii=False) or None})
    log.info("batch.completed", batch_id=batch_id, name=batch.name, total=batch.total,
             processed=batch.processed, skipped=batch.skipped, errored=batch.errored,
             on_complete=batch.on_complete, on_complete_job_id=job_id)
    return PartFinished(counted=True, completed=True, on_complete_job_id=job_id)


def get_batch(conn: Connection, store: RunsStore, batch_id: str) -> Batch | None:
    """The batch record, with its parts' errored items (in part order) as `error_items`."""
    row = conn.execute(store.statement(q.GET_BATCH), {"run_batch_id": batch_id}).mappings().first()
    if row is None:
        return None
    texts = conn.execute(store.statement(q.PART_ERRORS), {"run_batch_id": batch_id}).scalars()
    return Batch.from_row({**row, "error_items": json.dumps(merged_errors(list(texts)))})


def item_id(item: Any) -> Any:
    """How an item is named in a batch's error list: its "id" when it has one, else itself."""
    if isinstance(item, dict) and "id" in item:
        return item["id"]
    return item
