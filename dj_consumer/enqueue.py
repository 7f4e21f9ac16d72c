"""Python-side Delayed::Job.enqueue: rows whose handler Ruby's YAML.load_dj loads to the same values.

`shape="active_job"` writes what Rails' DelayedJobAdapter writes for `Job.perform_later(*args,
**kwargs)`: `Delayed::Job.enqueue(JobWrapper.new(job.serialize), queue: job.queue_name,
priority: job.priority)` — so the `queue` column and `job_data["queue_name"]` agree (ActiveJob's
default queue is "default"), `job_data["priority"]` is nil unless one was set (the column then
gets delayed_job's default, 0), and keyword arguments travel as the last argument, a hash
marked `_aj_ruby2_keywords`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dj_consumer.errors import ConfigError

if TYPE_CHECKING:
    from dj_consumer.clock import Clock
    from dj_consumer.config import Config
    from dj_consumer.registry import Registry
    from dj_consumer.store import Store

# `from dj_consumer import enqueue` is this module's function, so the package imports this
# module at once: the YAML emitter and the store are imported on first use instead.

#: ActiveJob's queue when the job class names none (`queue_as` unset).
ACTIVE_JOB_QUEUE = "default"


@dataclass(frozen=True)
class NewJob:
    """A row about to be inserted: its handler and the columns Ruby would write with it."""

    handler: str
    queue: str | None
    priority: int


def new_job(name: str, payload: Any = None, *, shape: str = "object", queue: str | None = None,
            priority: int | None = None, kwargs: Mapping[str, Any] | None = None) -> NewJob:
    """The handler and columns for job `name`. For `active_job`, `payload` is the argument
    list and `kwargs` the keyword arguments; for `object`/`struct` it is the attributes."""
    from dj_consumer import ruby_yaml

    if shape not in ruby_yaml.SHAPES:
        raise ConfigError(f"shape must be one of {', '.join(ruby_yaml.SHAPES)}, got {shape!r}")
    try:
        if shape != "active_job":
            if kwargs:
                raise ConfigError("keyword arguments are for --as active_job")
            handler = ruby_yaml.dump_handler(name, {} if payload is None else payload, shape=shape)
            return NewJob(handler, queue, priority or 0)
        arguments = [] if payload is None else payload
        if isinstance(arguments, Mapping):
            raise ConfigError("an active_job payload is the argument list (perform_later(*args)), "
                              "a JSON array; for keyword arguments give the object as kwargs "
                              "(--kwargs)")
        if not isinstance(arguments, Sequence) or isinstance(arguments, str):
            raise ConfigError(f"active_job arguments must be a list, got {type(arguments).__name__}")
        queue = queue or ACTIVE_JOB_QUEUE
        return NewJob(_job_wrapper(name, list(arguments), kwargs, queue, priority), queue,
                      priority or 0)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot enqueue {name}: {exc}") from None


def _job_wrapper(name: str, arguments: list[Any], kwargs: Mapping[str, Any] | None,
                 queue: str, priority: int | None) -> str:
    # ActiveJob::Core#serialize, key for key; the arguments as ActiveJob::Arguments writes them.
    from dj_consumer import ruby_yaml
    from dj_consumer.ruby_yaml._activejob import serialize_arguments

    serialized = serialize_arguments(arguments + ([dict(kwargs)] if kwargs else []))
    if kwargs:
        keywords = serialized[-1]
        del keywords["_aj_symbol_keys"]
        keywords["_aj_ruby2_keywords"] = list(kwargs)
    job_data: dict[str, Any] = {
        "job_class": name,
        "job_id": str(uuid.uuid4()),
        "provider_job_id": None,
        "queue_name": queue,
        "priority": priority,
        "arguments": serialized,
        "executions": 0,
        "exception_executions": {},
        "locale": "en",
        "timezone": "UTC",
        "enqueued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return ruby_yaml.dump_handler(ruby_yaml.JOB_WRAPPER, {"job_data": job_data}, shape="object")


def enqueue(
    config: Mapping[str, Any] | Config | str,
    name: str,
    payload: Any = None,
    *,
    shape: str = "object",
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    kwargs: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    registry: Registry | None = None,
) -> int:
    """Insert one job and return its id. `config` may be a database URL. The queue defaults
    to the `queue=` of the name's `@job.run` in `registry` (default: `dj_consumer.job`), and
    for active_job to ActiveJob's "default"."""
    from dj_consumer.config import Config
    from dj_consumer.store import Store

    if isinstance(config, str):
        config = {"database_url": config}
    cfg = Config.from_mapping(config)
    if queue is None:
        from dj_consumer import job as default_registry

        spec = (registry if registry is not None else default_registry).spec(name)
        queue = spec.queue if spec is not None else None
    job = new_job(name, payload, shape=shape, queue=queue, priority=priority, kwargs=kwargs)
    own = store is None
    st = store or Store(cfg)
    try:
        return insert(st, job, run_at=run_at, clock=clock)
    finally:
        if own:
            st.close()


def insert(store: Store, job: NewJob, *, run_at: datetime | None = None,
           clock: Clock | None = None) -> int:
    """Insert `job` (run_at: an aware time in any zone, or naive UTC; default now)."""
    from dj_consumer.clock import SystemClock

    now = (clock or SystemClock()).now()
    if run_at is not None and run_at.tzinfo is not None:
        run_at = (run_at - run_at.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
    job_id = store.insert(job.handler, now=now, run_at=run_at, queue=job.queue,
                          priority=job.priority)
    from dj_consumer.wakeup import ring_local

    ring_local(store.config)  # committed: idle workers of this process reserve now
    return job_id
