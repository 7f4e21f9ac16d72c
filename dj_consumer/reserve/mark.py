"""The backlog mark (docs/operations.md "Behind a Ruby backlog"): where the last row we could run was
found, so the next reserve resumes there instead of re-reading every Ruby row ahead of it."""

from __future__ import annotations

import threading
import time
from datetime import datetime

from dj_consumer.models import JobRow

#: How long the mark is trusted before a reserve rescans from the first ready row. A row
#: that becomes ready *behind* the mark (an expired lock, a retry by hand, a new row with a
#: lower priority number) waits at most this long more.
MARK_TTL = 30.0
#: The mark is only used once a full reserve is slow (a backlog is there): with a small
#: table, every reserve looks at every ready row, and the order is exact.
MARK_MIN_SCAN = 0.005


class BacklogMark:
    """(priority, run_at) of the last row taken: every ready row before it was one we
    cannot run (or locked). Shared by a worker's slots."""

    def __init__(self) -> None:
        self.key: tuple[int, datetime] | None = None
        self._since = 0.0
        self._lock = threading.Lock()

    def get(self) -> tuple[int, datetime] | None:
        """The mark, unless it is older than MARK_TTL (then rescan from the start)."""
        with self._lock:
            if self.key is None or time.monotonic() - self._since > MARK_TTL:
                self.key = None
            return self.key

    def clear(self) -> None:
        """Nothing past the mark: rows before it may have become ready; look at them all."""
        self.key = None

    def passed(self, row: JobRow) -> None:
        """A marked reserve took `row`: the mark moves on to it."""
        self._set(row, fresh=False)

    def scanned(self, row: JobRow, seconds: float) -> None:
        """A full reserve took `row` in `seconds`: a slow one sets a fresh mark there."""
        if seconds > MARK_MIN_SCAN:
            self._set(row, fresh=True)

    def _set(self, row: JobRow, *, fresh: bool) -> None:
        if row.run_at is None:
            return
        key = (row.priority, row.run_at)
        with self._lock:
            if fresh or self.key is None:
                self.key, self._since = key, time.monotonic()
            elif key > self.key:
                self.key = key
