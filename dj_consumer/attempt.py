"""What one attempt of a job tells its run record, with no SQL: progress, the items of a
batch part (`j.track`, `j.skip`), and the handler's return value.

The worker gives each attempt a `Sink` when the runs table exists (dj_consumer/runs/tracking.py
writes what it is told); without one, progress goes nowhere and the counts are only logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from dj_consumer.errors import DJConsumerError, FailJob

__all__ = ["SKIP", "Attempt", "CancelFlag", "Sink"]


class _Skip:
    """Return it from a `j.track(items, fn)` callback to count the item as skipped."""

    def __repr__(self) -> str:
        return "dj_consumer.SKIP"


SKIP: Any = _Skip()

#: What `errors=` of j.track accepts.
ERRORS = ("continue", "raise")
#: Characters of an errored item's message that are kept.
MESSAGE_CLIP = 500


class CancelFlag(threading.Event):
    """`j.cancelled`: set when the job's run record gets a cancel request (within one
    heartbeat); a flag as `j.timed_out` is, so `if j.cancelled:` reads as it means."""

    def __bool__(self) -> bool:
        return self.is_set()


class Sink(Protocol):
    """Where an attempt's reports go (the run records' writer)."""

    def progress(self, current: int, total: int | None, stage: str | None) -> None:
        """Never blocks on the database; may be throttled."""

    def result(self, value: Any) -> Any:
        """The return value as it is stored; raises (a failed attempt) when it cannot be."""


class TrackError(DJConsumerError):
    """j.track was used wrongly."""


class Attempt:
    """The mutable state of one attempt: the sink, the item counts, the result."""

    __slots__ = ("_done", "_items_lock", "current", "current_item", "errored", "mode",
                 "processed", "result", "sink", "skipped", "tracking", "unstarted")

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink
        self.processed = 0
        self.skipped = 0
        self.errored: list[tuple[Any, str]] = []  # (item, message)
        self._done: set[int] = set()  # positions of items counted (a handler called again)
        self.current: int | None = None  # the position of the item the loop body holds
        self.current_item: Any = None
        self.tracking = False
        self.mode = "continue"
        self.result: Any = None
        self.unstarted: Any = None  # the run record's start, when its write is still to come
        self._items_lock = threading.Lock()

    # -- progress ----------------------------------------------------------------------------

    def progress(self, current: int, total: int | None = None, stage: str | None = None) -> None:
        if self.sink is not None:
            self.sink.progress(int(current), None if total is None else int(total),
                               None if stage is None else str(stage))

    # -- the handler's return value ---------------------------------------------------------

    def keep_result(self, value: Any) -> None:
        """The handler returned `value`: as stored (JSON text with a run record), or raise."""
        self.result = self.sink.result(value) if self.sink is not None else value

    # -- items ---------------------------------------------------------------------------------

    @property
    def counted(self) -> int:
        return self.processed + self.skipped + len(self.errored)

    def track(self, items: Iterable[Any], fn: Callable[[Any], Any] | None = None, *,
              errors: str = "continue") -> Iterator[Any]:
        """Each item, counted as processed when the loop asks for the next one (or when `fn`
        returns; SKIP: skipped). An exception in the body marks the item errored: with
        errors="continue" the worker calls the handler again and this loop goes on after
        it (items already counted are not given again); "raise" fails the attempt."""
        if errors not in ERRORS:
            raise TrackError(f"errors must be 'continue' or 'raise', got {errors!r}")
        items = list(items)
        self.mode, self.tracking = errors, True
        if fn is not None:
            return iter(self._each(items, fn))
        return self._loop(items)

    def _loop(self, items: list[Any]) -> Iterator[Any]:
        total = len(items)
        for position, item in enumerate(items):
            if position in self._done:
                continue
            self.current, self.current_item = position, item
            yield item
            if self.current == position:  # not skipped meanwhile
                self._count(position, None)
            self.progress(self.counted, total)
        self.current = None

    def _each(self, items: list[Any], fn: Callable[[Any], Any]) -> list[Any]:
        results = []
        total = len(items)
        for position, item in enumerate(items):
            if position in self._done:
                continue
            self.current = position
            try:
                value = fn(item)
            except FailJob:
                raise
            except Exception as exc:
                if self.mode == "raise":
                    raise
                self.current = None
                self._error(position, item, exc)
            else:
                if self.current == position:
                    self._count(position, SKIP if value is SKIP else None)
                results.append(value)
            self.progress(self.counted, total)
        self.current = None
        return results

    def skip(self, item: Any = None) -> None:
        """Count the item the loop body holds as skipped (not processed)."""
        if self.current is None:
            raise TrackError("j.skip(item) is called inside a `for item in j.track(items):` loop")
        self._count(self.current, SKIP)

    def _count(self, position: int, kind: Any) -> None:
        with self._items_lock:
            if position in self._done:
                return
            self._done.add(position)
            if kind is SKIP:
                self.skipped += 1
            else:
                self.processed += 1
            self.current = None

    def _error(self, position: int, item: Any, exc: BaseException) -> None:
        with self._items_lock:
            if position in self._done:
                return
            self._done.add(position)
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.errored.append((item, message[:MESSAGE_CLIP]))

    def item_failed(self, exc: BaseException) -> bool:
        """The handler raised `exc` inside a track loop: mark that item errored and say
        whether to call the handler again (errors="continue"; never for FailJob)."""
        position = self.current
        if position is None or not self.tracking or self.mode != "continue" \
                or isinstance(exc, FailJob):
            return False
        self._error(position, self.current_item, exc)
        self.current = None
        return True

    def untouched(self, items: list[Any]) -> list[Any]:
        """The items no track loop counted (by position)."""
        return [item for position, item in enumerate(items) if position not in self._done]

    def log_fields(self) -> dict[str, Any]:
        """What job.succeeded carries when the handler tracked items."""
        if not self.tracking:
            return {}
        return {"processed": self.processed, "skipped": self.skipped,
                "errored": len(self.errored)}
