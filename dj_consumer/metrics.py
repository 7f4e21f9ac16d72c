"""Prometheus metrics (the [metrics] extra): an Observer that counts what the worker does.

prometheus-client is imported only when metrics are asked for (metrics_port), so a worker
without them never loads it. Names follow Betterment's `delayed` gem where it has one
(delayed.job.run, delayed.job.error, delayed.job.failure, delayed.worker.reserve_jobs, with
dots as underscores); the rest are dj_consumer_*. Under a supervisor (--processes) every
child writes to PROMETHEUS_MULTIPROC_DIR and the supervisor serves their sum
(prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from dj_consumer.errors import ConfigError
from dj_consumer.events import Observer, Poll
from dj_consumer.models import Failed, Job, Outcome, Rescheduled, Succeeded

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["NAMES", "Metrics", "exposition", "require"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Every metric, its kind and labels (docs/deploying.md lists them).
NAMES = {
    "delayed_job_run_seconds": ("histogram", ("name", "queue")),
    "delayed_job_error_total": ("counter", ("name", "queue")),
    "delayed_job_failure_total": ("counter", ("name", "queue")),
    "delayed_worker_reserve_jobs_seconds": ("histogram", ()),
    "dj_consumer_job_succeeded_total": ("counter", ("name", "queue")),
    "dj_consumer_job_timed_out_total": ("counter", ("name", "queue")),
    "dj_consumer_job_lock_lost_total": ("counter", ("name", "queue")),
    "dj_consumer_jobs_in_flight": ("gauge", ()),
    "dj_consumer_last_successful_poll_timestamp_seconds": ("gauge", ()),
    "dj_consumer_database_errors_total": ("counter", ("kind",)),
}
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
RESERVE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def require() -> None:
    """One clear line when metrics are asked for and the extra is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError("metrics_port needs prometheus-client: pip install "
                          "'dj_consumer[metrics]'") from None


class Metrics(Observer):
    """The worker's metrics, in their own registry (several workers in one process each
    count their own)."""

    def __init__(self) -> None:
        require()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry

        def counter(name: str) -> Any:
            return Counter(name.removesuffix("_total"), _HELP[name], NAMES[name][1], registry=reg)

        self.run = Histogram("delayed_job_run_seconds", _HELP["delayed_job_run_seconds"],
                             ("name", "queue"), buckets=RUN_BUCKETS, registry=reg)
        self.reserve = Histogram("delayed_worker_reserve_jobs_seconds",
                                 _HELP["delayed_worker_reserve_jobs_seconds"],
                                 buckets=RESERVE_BUCKETS, registry=reg)
        self.rescheduled = counter("delayed_job_error_total")
        self.failed = counter("delayed_job_failure_total")
        self.succeeded = counter("dj_consumer_job_succeeded_total")
        self.timed_out = counter("dj_consumer_job_timed_out_total")
        self.lock_lost = counter("dj_consumer_job_lock_lost_total")
        self.db_errors = counter("dj_consumer_database_errors_total")
        self.in_flight = Gauge("dj_consumer_jobs_in_flight", _HELP["dj_consumer_jobs_in_flight"],
                               registry=reg, multiprocess_mode="livesum")
        self.last_poll = Gauge("dj_consumer_last_successful_poll_timestamp_seconds",
                               _HELP["dj_consumer_last_successful_poll_timestamp_seconds"],
                               registry=reg, multiprocess_mode="max")
        self._lock = threading.Lock()

    def polled(self, kind: Poll, seconds: float, exc: BaseException | None = None) -> None:
        if kind is Poll.ERROR:
            self.db_errors.labels(error_kind(exc)).inc()
            return
        self.reserve.observe(seconds)
        self.last_poll.set(time.time())

    def started(self, job: Job) -> None:
        self.in_flight.inc()

    def ran(self, job: Job, seconds: float) -> None:
        self.in_flight.dec()
        self.run.labels(job.name, job.queue or "").observe(seconds)

    def outcome(self, job: Job, outcome: Outcome, lost: bool = False) -> None:
        labels = (job.name, job.queue or "")
        if lost:
            self.lock_lost.labels(*labels).inc()
            return
        if isinstance(outcome, Succeeded):
            self.succeeded.labels(*labels).inc()
            return
        if isinstance(outcome, Rescheduled | Failed):
            (self.rescheduled if isinstance(outcome, Rescheduled) else self.failed).labels(
                *labels).inc()
            if job.timed_out.is_set():
                self.timed_out.labels(*labels).inc()


def error_kind(exc: BaseException | None) -> str:
    """A small, fixed set of label values: refused (auth, grants, table), unavailable
    (connection lost, server away), or other."""
    if exc is None:
        return "other"
    from sqlalchemy.exc import DisconnectionError, OperationalError

    from dj_consumer.db import is_refusal

    if is_refusal(exc):
        return "refused"
    if isinstance(exc, OperationalError | DisconnectionError):
        return "unavailable"
    return "other"


def exposition(registry: CollectorRegistry | None) -> tuple[bytes, str]:
    """/metrics' body and content type: `registry`, or (None) the sum of every process
    writing to PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if registry is None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, os.environ[MULTIPROC_ENV])
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_dead(pid: int) -> None:
    """A child is gone: its live gauges (jobs in flight) stop counting."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_HELP = {
    "delayed_job_run_seconds": "Run time of a job's handler (delayed.job.run)",
    "delayed_job_error_total": "Failed attempts rescheduled to run again (delayed.job.error)",
    "delayed_job_failure_total": "Jobs failed for good (delayed.job.failure)",
    "delayed_worker_reserve_jobs_seconds": "Time of one reserve, the pickup query "
                                           "(delayed.worker.reserve_jobs)",
    "dj_consumer_job_succeeded_total": "Jobs that succeeded and were deleted",
    "dj_consumer_job_timed_out_total": "Attempts that ran past max_run_time (or were "
                                       "timed out), rescheduled or failed",
    "dj_consumer_job_lock_lost_total": "Outcomes not written: the row was no longer ours",
    "dj_consumer_jobs_in_flight": "Handlers running now",
    "dj_consumer_last_successful_poll_timestamp_seconds": "Unix time of the last reserve "
                                                          "that reached the database",
    "dj_consumer_database_errors_total": "Reserves that failed, by kind (refused, "
                                         "unavailable, other)",
}
