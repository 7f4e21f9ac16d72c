"""Report every failed attempt, and every job that fails for good, to an error tracker.

    dj-consumer work --import myapp.jobs --import sample_jobs.error_reporting

Hooks registered for "*" run for every job, after the job's own error / failure hook (as
Ruby's Delayed::Worker.lifecycle callbacks wrap a job's hooks). A hook that raises (the
tracker is down) is logged as job.hook_failed and never changes the job's outcome.

The client below is a stand-in with Sentry's call shape, so this file needs no dependency;
in an application use the real one:

    import sentry_sdk
    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"])
    client = sentry_sdk          # capture_exception(exc) + new_scope() for tags and context
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dj_consumer import Job, Registry, job


@dataclass
class StubTracker:
    """Records what it was given, as `sentry_sdk.capture_exception` would send it."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def capture_exception(self, exc: BaseException, *, level: str, tags: dict[str, str],
                          context: dict[str, Any]) -> None:
        self.events.append({"exception": exc, "level": level, "tags": tags, "context": context})


client = StubTracker()


def _facts(j: Job) -> tuple[dict[str, str], dict[str, Any]]:
    tags = {"job.name": j.name, "job.queue": j.queue or "nil"}
    context = {"job_id": j.id, "attempt": j.attempts + 1, "max_attempts": j.max_attempts,
               "display_name": j.display_name, "timed_out": bool(j.timed_out)}
    return tags, context


def install(registry: Registry = job) -> None:
    """Register the two hooks (on `dj_consumer.job` unless told otherwise)."""

    @registry.error("*")
    def report_attempt(j: Job, exc: BaseException) -> None:
        # Every failed attempt; it will be retried unless this was the last one.
        tags, context = _facts(j)
        client.capture_exception(exc, level="warning", tags=tags, context=context)

    @registry.failure("*")
    def report_failure(j: Job, exc: BaseException) -> None:
        # Once, when the job fails for good (attempts used up, FailJob, unparseable handler).
        tags, context = _facts(j)
        client.capture_exception(exc, level="error", tags=tags, context=context)


if __name__ != "__main__":
    install()
