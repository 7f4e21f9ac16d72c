"""dj_consumer: run a Rails delayed_jobs table's jobs with Python handlers, beside Ruby workers."""

from __future__ import annotations

from dj_consumer.config import Config
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

#: The default registry: `@job.run("NewsletterJob")` and friends.
job = Registry()

from dj_consumer.enqueue import enqueue  # noqa: E402
from dj_consumer.worker import Worker, make_worker  # noqa: E402

__all__ = [
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
    "enqueue",
    "job",
    "make_worker",
]
__version__ = "0.1.0"
