"""dj_consumer: run a Rails delayed_jobs table's jobs with Python handlers, beside Ruby workers.

The decorators (`job`), `Job`, the errors, `Registry` and `enqueue` load at once; `make_worker`,
`Worker`, `Config`, `cancel`, `enqueue_batch` and `run_now` on first use, so importing a handler module (or starting `dj-consumer
--help`) does not pay for SQLAlchemy and the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# `enqueue` names both a module and its function: importing it here binds the function (a
# submodule imported later would shadow a lazily loaded name). It is light.
from dj_consumer.attempt import SKIP
from dj_consumer.enqueue import enqueue
from dj_consumer.errors import (
    ConfigError,
    DJConsumerError,
    FailJob,
    HandlerParseError,
    JobTimeout,
    RegistryError,
)
from dj_consumer.models import Job
from dj_consumer.registry import Registry

if TYPE_CHECKING:
    from dj_consumer.config import Config
    from dj_consumer.runs import cancel, enqueue_batch
    from dj_consumer.scheduling import schedule, schedules
    from dj_consumer.testing import run_now
    from dj_consumer.worker import Worker, make_worker

#: The default registry: `@job.run("NewsletterJob")` and friends.
job = Registry()

_LAZY = {
    "Config": "dj_consumer.config",
    "Worker": "dj_consumer.worker",
    "make_worker": "dj_consumer.worker",
    "cancel": "dj_consumer.runs",
    "enqueue_batch": "dj_consumer.runs",
    "run_now": "dj_consumer.testing",
    "schedule": "dj_consumer.scheduling",
    "schedules": "dj_consumer.scheduling",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dj_consumer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "SKIP",
    "Config",
    "ConfigError",
    "DJConsumerError",
    "FailJob",
    "HandlerParseError",
    "Job",
    "JobTimeout",
    "Registry",
    "RegistryError",
    "Worker",
    "cancel",
    "enqueue",
    "enqueue_batch",
    "job",
    "make_worker",
    "run_now",
    "schedule",
    "schedules",
]
__version__ = "0.1.0"
