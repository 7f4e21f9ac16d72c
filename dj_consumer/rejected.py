"""The rows a reserve turned down, so the next poll does not parse them again.

A ready row whose handler merely resembles one of ours (`welcome_back` for `welcome`,
`ImportJob` for `Import`, any row at all for a core-class name) is parsed, found not to be
ours, and remembered here by id and handler. Every reserve of the process reads past it
without parsing it again for REJECT_TTL seconds; a changed handler (or new handlers
registered: `clear`) makes it count as new.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from dj_consumer.models import JobRow

V = TypeVar("V")

#: How long a rejection is trusted. The verdict depends only on the handler text and the
#: registered names, so this only bounds how stale the memory may grow.
REJECT_TTL = 60.0
#: Rows remembered at most (an id and two numbers each); past it, expired ones are dropped
#: first, then all.
REJECT_MAX = 100_000


class Rejected:
    """Rows `accept` said no to: id → (hash of the handler, monotonic expiry)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._rows: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def wrap(self, accept: Callable[[JobRow], V | None]) -> Callable[[JobRow], V | None]:
        """`accept`, answering "no" (None) at once for a row it already turned down."""
        def check(job: JobRow) -> V | None:
            seen = self._rows.get(job.id)  # the common case: never seen, one dict lookup
            if seen is not None and seen[1] > self._clock() and seen[0] == hash(job.handler):
                return None
            verdict = accept(job)
            if verdict:
                return verdict
            self._add(job.id, hash(job.handler))
            return None

        return check

    def clear(self) -> None:
        with self._lock:
            self._rows = {}

    def __len__(self) -> int:
        return len(self._rows)

    def _add(self, job_id: int, key: int) -> None:
        now = self._clock()
        with self._lock:
            if len(self._rows) >= REJECT_MAX:
                # A new dict, swapped in whole: readers never see one being changed.
                live = {k: v for k, v in self._rows.items() if v[1] > now}
                self._rows = live if len(live) < REJECT_MAX else {}
            self._rows[job_id] = (key, now + REJECT_TTL)
