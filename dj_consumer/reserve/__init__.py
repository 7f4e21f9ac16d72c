"""How a reserve locks rows: one small class per strategy behind one interface (Reserver:
`one` row, or `many`), chosen once when the store knows its server (Store.check).

| strategy | module | how |
|---|---|---|
| default_sql | default_sql.py | read candidates, claim one if still ready (Rails' default) |
| skip_locked | skip_locked.py | SELECT … FOR UPDATE SKIP LOCKED in a short transaction |
| skip_locked, MySQL | mysql_script.py | the same in one round trip, one script |
| skip_locked, PostgreSQL | pg_one_trip.py | the same in one round trip, one statement |
| update_returning, update_limit | lock_first.py | Rails' optimized_sql: lock, then check |

When a strategy's own statements cannot settle a reserve (the row was not ours, or another
worker took it first), the scan goes on past it (scan.py). The backlog mark (mark.py) lets a
reserve start past the Ruby rows ahead of ours.
"""

from __future__ import annotations

from dj_consumer.reserve.base import SCAN, Done, Reserver, Tools, locked, to_job
from dj_consumer.reserve.default_sql import DefaultSQL
from dj_consumer.reserve.lock_first import LOCK_FIRST, LockFirst
from dj_consumer.reserve.mark import BacklogMark
from dj_consumer.reserve.mysql_script import MySQLScript
from dj_consumer.reserve.pg_one_trip import PostgresOneTrip
from dj_consumer.reserve.skip_locked import SkipLocked

__all__ = ["LOCK_FIRST", "SCAN", "BacklogMark", "Done", "Reserver", "Tools", "choose",
           "locked", "to_job"]


def choose(strategy: str, tools: Tools) -> Reserver:
    """The Reserver for a strategy name (Store.strategy)."""
    if strategy in LOCK_FIRST:
        return LockFirst(tools, strategy)
    if strategy == "skip_locked" and tools.dialect == "postgresql":
        return PostgresOneTrip(tools)
    if strategy == "skip_locked":
        return MySQLScript(tools) if tools.db.scripts else SkipLocked(tools)
    return DefaultSQL(tools)
