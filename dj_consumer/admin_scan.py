"""The dashboard's listing: pages of matching rows, newest first, each reading a bounded number
of rows whatever the filter.

Rails' schema indexes only (priority, run_at): a filter on a state, a queue or a text in the
handler can match one row in a million, and a plain `ORDER BY … LIMIT` would then read the
whole table to fill a page. Instead a page walks the primary key down in windows (admin_sql
SCAN_PAGE), doubling the window while the page is not full, and stops when it is full, when
the ids run out, or when its time budget is spent; the page then says how far down it looked
and offers the next window. Nothing here writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dj_consumer import admin_sql as q
from dj_consumer import ruby_yaml
from dj_consumer.admin import Filter, Row, _row, job_name

if TYPE_CHECKING:
    from dj_consumer.admin import Admin

#: Characters of a handler a listing reads: enough to name any job Rails writes; a longer
#: handler is named by its beginning (ruby_yaml.fallback_dispatch_name).
HEAD = 65_536
#: Ids the first window covers; each next window doubles, up to MAX_WINDOW.
FIRST_WINDOW = 20_000
MAX_WINDOW = 320_000
#: Rows fetched per statement when a name filter parses each candidate.
CANDIDATES = 200


@dataclass(frozen=True)
class ScanPage:
    rows: list[Row]
    names: list[str]  # each row's job name, as `status` names it
    older: int | None  # `before` for the next page; None: no row is older
    searched_to: int  # the lowest id looked at (0: the table is empty)


def listed_name(handler: str) -> str:
    """The job name of a handler read up to HEAD characters (+1 to tell it was cut)."""
    if len(handler) <= HEAD:
        return job_name(handler)
    return ruby_yaml.fallback_dispatch_name(handler[:HEAD]) or "?"


def scan(admin: Admin, f: Filter, now: datetime, horizon: datetime, *, before: int | None = None,
         limit: int = 50, budget: float = 0.12,
         clock: Callable[[], float] = time.monotonic) -> ScanPage:
    """Up to `limit` rows matching `f` with id < `before` (None: from the newest), newest first."""
    started = clock()
    with admin.store.engine.connect() as conn:
        first, last = conn.execute(admin._sql(q.ID_RANGE)).one()
        if first is None:
            return ScanPage([], [], None, 0)
        first, cursor = int(first), min(int(last) + 1, before or int(last) + 1)
        params = admin._params(f, now, horizon)
        stmt = admin._sql(q.SCAN_PAGE, ("run_at", "locked_at", "failed_at"))
        rows: list[Row] = []
        names: list[str] = []
        window = FIRST_WINDOW
        while cursor > first:
            floor = max(cursor - window, first)
            want = CANDIDATES if f.name else limit - len(rows)
            asked = clock()
            batch = conn.execute(stmt, {**params, "before": cursor, "floor": floor,
                                        "head": HEAD + 1, "limit": want}).all()
            for r in batch:
                if _take(_row(r), f, rows, names) and len(rows) == limit:
                    last_id = rows[-1].id
                    return ScanPage(rows, names, last_id if last_id > first else None, last_id)
            # A full batch leaves the rest of this window to read; else the window is done
            # and the next, twice as wide, is read only if it should fit in the budget.
            if len(batch) == want:
                cursor = int(batch[-1].id)
                grow = 1
            else:
                cursor, grow = floor, 2 if window < MAX_WINDOW else 1
            now_s = clock()
            if now_s - started + (now_s - asked) * grow > budget:
                break
            window *= grow
    return ScanPage(rows, names, cursor if cursor > first else None, cursor)


def _take(row: Row, f: Filter, rows: list[Row], names: list[str]) -> bool:
    name = listed_name(row.handler)
    if f.name and name != f.name:
        return False
    rows.append(row)
    names.append(name)
    return True

