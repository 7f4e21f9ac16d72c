"""`async def` handlers and hooks: awaited on one event loop per slot thread, kept between jobs.

A coroutine is never dropped: whatever a handler or hook returns that can be awaited is run to
completion here. While the work of an attempt runs (not its error/after/failure hooks), setting
`j.timed_out` (max_run_time, a lost lease, an interrupting stop) cancels the task: the one way
to stop a coroutine that never looks at the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

from dj_consumer.models import Job


class Cancelled(Exception):
    """The coroutine was cancelled because j.timed_out was set."""


class Loops:
    """One event loop per thread that runs jobs; `close_current` at the end of that thread."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: set[asyncio.AbstractEventLoop] = set()
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], job: Job, *args: Any, cancellable: bool) -> Any:
        """fn(job, *args); if it returns an awaitable, run it on this thread's loop. Returns
        what fn (or its awaitable) returned."""
        result = fn(job, *args)
        if result is None or not inspect.isawaitable(result):
            return result
        loop = self._current()
        task = loop.create_task(_awaited(result))
        if not cancellable:
            return loop.run_until_complete(task)

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the task is long gone
                loop.call_soon_threadsafe(task.cancel)

        job.timed_out.add_callback(cancel)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if job.timed_out:
                raise Cancelled() from None
            raise
        finally:
            job.timed_out.remove_callback(cancel)

    def _current(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._all.add(loop)
        return loop

    def close_current(self) -> None:
        """Close this thread's loop (cancelling tasks a handler left behind), if it has one."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        self._local.loop = None
        if loop is None or loop.is_closed():
            return
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            with self._lock:
                self._all.discard(loop)

    def close(self) -> None:
        """Close every loop no thread is running now (those of threads that have ended)."""
        with self._lock:
            loops = [loop for loop in self._all if not loop.is_running()]
            self._all.difference_update(loops)
        for loop in loops:
            loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def run_to_end(result: Any) -> Any:
    """In a forked child (timeout="process"): a coroutine runs on a fresh loop of its own."""
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result
