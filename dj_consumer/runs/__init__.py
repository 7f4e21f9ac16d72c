"""Job runs a Rails app can poll (docs/runs.md "Job runs"): run records, cancel, batches.

    from dj_consumer import runs
    run = runs.wait(job_id, timeout=30)          # the final record, or RunTimeout
    runs.get(job_id), runs.find(run_key="report-7"), runs.cancel(job_id)

Each function takes `config=` (a database URL, config keys, or a Config); without it, the
database `dj-consumer` would use (DJ_DATABASE_URL …, the config file). A client per database
is kept for the process, so polling does not reconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from dj_consumer.runs.api import Cancelled, ConfigLike, Runs, resolve_config
from dj_consumer.runs.batches import DEFAULT_BATCH_SIZE, BatchEnqueued, PartFinished
from dj_consumer.runs.records import (
    Batch,
    PartSummary,
    ResultError,
    Run,
    RunNotFound,
    RunTimeout,
    result_json,
)

__all__ = [
    "Batch", "BatchEnqueued", "Cancelled", "PartFinished", "PartSummary", "ResultError", "Run",
    "RunNotFound", "RunTimeout", "Runs", "batch", "cancel", "client", "enqueue_batch", "find",
    "get", "result_json", "wait",
]

_clients: dict[tuple[Any, ...], Runs] = {}
_clients_lock = threading.Lock()


def client(config: ConfigLike = None) -> Runs:
    """The process's Runs client for this database (made on first use, then kept)."""
    cfg = resolve_config(config)
    key = (cfg.url.render_as_string(hide_password=False), cfg.table_name, cfg.runs_table,
           cfg.batches_table, cfg.max_run_time)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            found = _clients[key] = Runs(cfg)
        return found


def get(job_id: int, *, config: ConfigLike = None) -> Run | None:
    """The run record of job `job_id`, or None."""
    return client(config).get(job_id)


def find(*, run_key: str | None = None, owner_id: Any = None, state: str | None = None,
         name: str | None = None, batch_id: str | None = None, limit: int = 100,
         config: ConfigLike = None) -> list[Run]:
    """The records matching every filter given, the latest first."""
    return client(config).find(run_key=run_key, owner_id=owner_id, state=state, name=name,
                               batch_id=batch_id, limit=limit)


def wait(job_id: int, timeout: float, *, config: ConfigLike = None) -> Run:
    """The final record (succeeded, failed, cancelled), polling with backoff; RunTimeout."""
    return client(config).wait(job_id, timeout)


def cancel(job_id: int, keep: bool = False, *, config: ConfigLike = None) -> Cancelled:
    """Cancel a waiting job (deleted, or failed with `keep`) or ask a running one to stop."""
    return client(config).cancel(job_id, keep=keep)


def enqueue_batch(name: str, items: Sequence[Any], *, batch_size: int = DEFAULT_BATCH_SIZE,
                  on_complete: str | None = None, queue: str | None = None, priority: int = 0,
                  config: ConfigLike = None) -> BatchEnqueued:
    """Split `items` into delayed_jobs rows of `batch_size` items for handler `name`; when the
    last finishes, `on_complete` is enqueued once with the batch summary as its payload."""
    if queue is None:
        from dj_consumer import job as default_registry

        spec = default_registry.spec(name)
        queue = spec.queue if spec is not None else None
    return client(config).enqueue_batch(name, items, batch_size=batch_size,
                                         on_complete=on_complete, queue=queue,
                                         priority=priority)


def batch(batch_id: str, *, config: ConfigLike = None) -> Batch | None:
    """The batch record (counts; errored items with ids and messages)."""
    return client(config).batch(batch_id)
