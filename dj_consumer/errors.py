"""Every exception dj_consumer raises. The docstring of each class is its default message."""

from __future__ import annotations

import traceback


class DJConsumerError(Exception):
    """dj_consumer error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class FailJob(DJConsumerError):
    """The job asked to fail for good; it will not be retried."""


class ConfigError(DJConsumerError):
    """The configuration is invalid."""


class FatalError(DJConsumerError):
    """The worker cannot do its work (the database refuses it) and stopped."""


class EnqueueUnknown(DJConsumerError):
    """The connection was lost while an enqueue committed; it was not inserted again."""


class HandlerParseError(DJConsumerError):
    """The handler YAML could not be understood."""


class RegistryError(DJConsumerError):
    """A handler is registered twice, or a hook names no job."""


class RegistryWarning(UserWarning):
    """A registration that is allowed but almost certainly a mistake (a name no Ruby job has)."""


class JobTimeout(DJConsumerError):
    """execution expired"""

    @classmethod
    def after(cls, seconds: float) -> JobTimeout:
        # Same words as Ruby's Delayed::WorkerTimeout#message, so last_error reads alike.
        whole = int(seconds)
        plural = "" if whole == 1 else "s"
        return cls(f"execution expired (Delayed::Worker.max_run_time is only {whole} second{plural})")


class ProcessTimeout(JobTimeout):
    """The job's process outlived max_run_time and was killed."""


class ChildJobError(DJConsumerError):
    """The job raised in its child process (timeout="process")."""

    def __init__(self, message: str, child_traceback: str = "") -> None:
        super().__init__(message)
        self.child_traceback = child_traceback


def format_error(exc: BaseException) -> str:
    """last_error as Delayed::Backend::Base#error= writes it: message, newline, backtrace."""
    message = str(exc) or type(exc).__name__
    trace = getattr(exc, "child_traceback", "") or "".join(traceback.format_exception(exc))
    return f"{message}\n{trace.rstrip()}"
