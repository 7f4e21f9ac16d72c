"""One worker process: `dj-consumer work` itself, or child k of a supervisor (--processes).

Child k runs the same command line as its supervisor with worker_id "{worker_id}.{k}", so its
slots lock rows as "{worker_id}.{k}[:{slot}] host:… pid:…" (Ruby's ClearLocks and our lease
matching stay exact), and keeps the supervisor's lease ids so it recovers its siblings'
leases. It serves no port: it publishes its health to a file and its metrics to
PROMETHEUS_MULTIPROC_DIR, and the supervisor serves both.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog

from dj_consumer.config import Config
from dj_consumer.events import Observer, Observers
from dj_consumer.health import Health, Server
from dj_consumer.registry import Registry
from dj_consumer.worker import Worker

log = structlog.get_logger(__name__)

__all__ = ["child_config", "run_worker"]


def child_config(cfg: Config, index: int) -> Config:
    """The supervisor's config as child `index` runs it."""
    return cfg.replace(worker_id=f"{cfg.worker_id}.{index}", lease_worker_ids=cfg.lease_ids,
                       processes="1", metrics_port=None)


def run_worker(cfg: Config, registry: Registry, *, health_file: Path | None = None,
               multiproc_metrics: bool = False) -> int:
    """Run a worker until it stops; with metrics_port, serve /metrics, /healthz, /readyz."""
    from dj_consumer import metrics

    observers: list[Observer] = []
    health = Health(cfg.sleep_delay, cfg.concurrency, publish_to=health_file)
    if cfg.metrics_port is not None or health_file is not None:
        observers.append(health)
    prom: metrics.Metrics | None = None
    if multiproc_metrics or cfg.metrics_port is not None:
        try:
            prom = metrics.Metrics()
            observers.append(prom)
        except Exception as exc:  # the extra is not installed: health only
            log.warning("metrics.off", error=str(exc), hint="/healthz and /readyz are served")
    worker = Worker(cfg, registry, observer=Observers(observers) if observers else None)
    server = None
    if cfg.metrics_port is not None:
        body = (lambda: metrics.exposition(prom.registry)) if prom is not None else None
        server = Server(cfg.metrics_host, cfg.metrics_port, live=health.live,
                        ready=health.ready, metrics=body).start()
    if health_file is not None:
        _stop_when_orphaned(worker)
    try:
        worker.start()
    finally:
        worker.close()
        if server is not None:
            server.close()
    return 0


def _stop_when_orphaned(worker: Worker) -> None:
    """A child whose supervisor died (kill -9) finishes its jobs and exits."""
    parent = os.getppid()

    def watch() -> None:
        while not worker.stopping:
            if os.getppid() != parent:
                log.warning("worker.orphaned", supervisor=parent, hint="finishing and exiting")
                worker.stop()
                return
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="dj-orphan-watch", daemon=True).start()
