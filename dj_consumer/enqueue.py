"""Python-side Delayed::Job.enqueue: rows whose handler Ruby's YAML.load_dj loads to the same values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dj_consumer import ruby_yaml
from dj_consumer.clock import Clock, SystemClock
from dj_consumer.config import Config
from dj_consumer.registry import Registry
from dj_consumer.store import Store


def enqueue(
    config: Mapping[str, Any] | Config | str,
    name: str,
    payload: Any = None,
    *,
    shape: str = "object",
    queue: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    clock: Clock | None = None,
    store: Store | None = None,
    registry: Registry | None = None,
) -> int:
    """Insert one job and return its id. `config` may be a database URL. The queue defaults
    to the `queue=` of the name's `@job.run` in `registry` (default: `dj_consumer.job`)."""
    if shape not in ruby_yaml.SHAPES:
        raise ValueError(f"shape must be one of {ruby_yaml.SHAPES}, got {shape!r}")
    if isinstance(config, str):
        config = {"database_url": config}
    cfg = Config.from_mapping(config)
    if queue is None:
        from dj_consumer import job as default_registry

        spec = (registry if registry is not None else default_registry).spec(name)
        queue = spec.queue if spec is not None else None
    handler = ruby_yaml.dump_handler(name, {} if payload is None else payload, shape=shape)
    own = store is None
    st = store or Store(cfg)
    try:
        now = (clock or SystemClock()).now()
        if run_at is not None and run_at.tzinfo is not None:
            run_at = (run_at - run_at.utcoffset()).replace(tzinfo=None)  # type: ignore[operator]
        return st.insert(handler, now=now, run_at=run_at, queue=queue, priority=priority)
    finally:
        if own:
            st.close()
