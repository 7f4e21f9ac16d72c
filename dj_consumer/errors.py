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

    def __init__(self, message: str, child_traceback: str = "", child_class: str = "") -> None:
        super().__init__(message)
        self.child_traceback = child_traceback
        #: the class the child raised (exception_class's spelling), named in last_error
        self.child_class = child_class


def exception_class(error: BaseException) -> str:
    """`KeyError` for a builtin, `myapp.billing.CardDeclined` for anything else (the log
    lines' `error_class`, and the first line of last_error). A timeout="process" child's
    error is named by the class the child raised."""
    if isinstance(error, ChildJobError) and error.child_class:
        return error.child_class
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def format_error(exc: BaseException, *, named: bool = True) -> str:
    """last_error: `ClassName: message` (Python's own last traceback line), newline, traceback.

    Ruby 4.1.9's Backend::Base#error= writes `message` alone on the first line; for a Python
    error that loses the class (a KeyError's first line would be just `'email'`), so we name it
    as Python does: `KeyError: 'email'`, or just `KeyError` when the message is empty. A
    timeout="process" child's error is named by the child's class. `named=False` keeps the
    message alone, for errors whose text is Ruby's own ("Job failed to load: …")."""
    message = str(exc)
    if named:
        kind = exception_class(exc)
        head = f"{kind}: {message}" if message else kind
    else:
        head = message or type(exc).__name__
    trace = getattr(exc, "child_traceback", "") or "".join(traceback.format_exception(exc))
    return f"{head}\n{trace.rstrip()}"
