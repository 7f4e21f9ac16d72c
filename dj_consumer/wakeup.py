"""What an idle slot waits for (docs/operations.md "Pick-up latency").

A slot whose reserve found nothing sleeps until the earliest future run_at of a row it could
run (one query), bounded by sleep_delay. It wakes sooner when rung: by the prober (one per
process: a primary-key-only look every idle_poll for rows added since the last look), by a
PostgreSQL notification (notify.py), or by an enqueue in this process. Every ring is only a
hint to reserve now; polling at sleep_delay stays the safety net.

A slot arms its event before each reserve and waits on it after: a ring that comes while the
reserve runs is never lost.
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.types import DateTime, Integer

from dj_consumer.db import short_error
from dj_consumer.looping import Looping

if TYPE_CHECKING:
    from dj_consumer.clock import Clock
    from dj_consumer.config import Config
    from dj_consumer.store import Store

log = structlog.get_logger(__name__)

#: Wake this long after a run_at, not before it: the clock's resolution, and MySQL's
#: whole seconds (the ready query compares run_at with the time truncated).
AFTER_RUN_AT = 0.002
#: Shorter waits than this are not worth a sleep.
MIN_SLEEP = 0.001
#: The next run_at is looked for in this many priorities at most (rows of later ones are
#: found by the next poll, at sleep_delay).
MAX_PRIORITIES = 16

#: The wakeups of the workers running in this process, for enqueue (ring_local).
_LIVE: weakref.WeakSet[Wakeup] = weakref.WeakSet()


class Statements:
    """The wakeup's statements: plain reads, no lock taken, none waited for."""

    def __init__(self, store: Store) -> None:
        t, filters = store.table, store.sql.filters()
        mine = f"locked_at IS NULL AND failed_at IS NULL AND {filters}"
        # The next time a row of ours becomes ready by itself (run_at reached), no further
        # than the sleep we would do anyway (rows locked by others ring when unlocked). The
        # (priority, run_at) index orders run_at only within one priority, so the client
        # walks the few distinct priorities (a skip scan, each step one index lookup) and in
        # each reads the index from :now on to the first row of ours: never a table scan.
        self.next_priority = text(
            f"SELECT MIN(priority) AS priority FROM {t} WHERE priority > :after"
        ).columns(priority=Integer())
        self.first_priority = text(f"SELECT MIN(priority) AS priority FROM {t}").columns(
            priority=Integer())
        self.next_run_at = text(
            f"SELECT run_at FROM {t} WHERE priority = :priority AND run_at > :now "
            f"AND run_at <= :until AND {mine} ORDER BY run_at LIMIT 1"
        ).bindparams(bindparam("now", type_=DateTime()), bindparam("until", type_=DateTime())
                     ).columns(run_at=DateTime())
        # The prober's look: the primary key's last entry only (no row is read).
        self.top_id = text(f"SELECT MAX(id) AS id FROM {t}").columns(id=Integer())
        # Rows added since: any of ours? (A primary-key range, then our filters.)
        self.added = text(
            f"SELECT id FROM {t} WHERE id > :seen AND id <= :top AND {mine} LIMIT 1"
        ).columns(id=Integer())
        # SQLite without AUTOINCREMENT (tables made by older versions of ours, or by hand)
        # gives a new row max(id) + 1: with the top row just deleted, the new row takes its
        # id and MAX(id) does not move. There the prober also reads the top row's created_at
        # (the same primary-key lookup), and the created_at of the row it saw on top.
        self.is_sqlite = store.dialect == "sqlite"
        self.table_sql = text(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name")
        self.top_row = text(f"SELECT id, created_at FROM {t} ORDER BY id DESC LIMIT 1").columns(
            id=Integer())
        self.created_at = text(f"SELECT created_at FROM {t} WHERE id = :id")


class Wakeup:
    """The idle slots of one worker, and what rings them.

    A ring wakes one waiting slot, not all of them: a slot woken that finds a job rings
    again before running it (`found`), so a burst of rows brings in one slot after another
    and a single row costs one reserve, not one per slot. With no slot waiting, a ring
    sets every slot's event: one between its empty reserve and its wait goes round again."""

    def __init__(self, config: Config, store: Store, clock: Clock) -> None:
        self.config, self.store, self.clock = config, store, clock
        self._events: dict[str, threading.Event] = {}
        self._waiting: dict[str, threading.Event] = {}  # in wait(), not rung yet
        self._rung: set[str] = set()  # woken by a ring, not reserved since
        self._idle = 0
        self._lock = threading.Lock()
        self._stmts: tuple[object, Statements] | None = None
        _LIVE.add(self)

    @property
    def statements(self) -> Statements:
        """Built from the store's statements, again whenever it rebuilt them (name filters)."""
        cached = self._stmts
        if cached is None or cached[0] is not self.store.sql:
            cached = self._stmts = (self.store.sql, Statements(self.store))
        return cached[1]

    def _event(self, me: str) -> threading.Event:
        with self._lock:
            event = self._events.get(me)
            if event is None:
                event = self._events[me] = threading.Event()
            return event

    def arm(self, me: str) -> None:
        """Before a reserve: forget earlier rings (the reserve sees what they rang for)."""
        self._event(me).clear()

    def ring(self, *, everyone: bool = False) -> None:
        """Something may be ready: one waiting slot reserves now (`everyone`: all slots,
        as a stop wants)."""
        with self._lock:
            if self._waiting and not everyone:
                me = next(iter(self._waiting))
                events = [self._waiting.pop(me)]
            else:
                events = list(self._events.values())
                self._waiting.clear()
        for event in events:
            event.set()

    @property
    def idle(self) -> bool:
        """Is a slot waiting now?"""
        return self._idle > 0

    def wait(self, me: str, delay: float | None = None) -> None:
        """A reserve found nothing: sleep until the next run_at of ours, sleep_delay at
        most, or a ring. `delay`: that sleep, if the caller asked `delay()` already."""
        event = self._event(me)
        if not event.is_set():
            with self._lock:
                self._idle += 1
                self._waiting[me] = event
            try:
                self.clock.sleep(self.delay() if delay is None else delay, event)
            finally:
                with self._lock:
                    self._idle -= 1
                    self._waiting.pop(me, None)
        with self._lock:
            if event.is_set():
                self._rung.add(me)
            else:
                self._rung.discard(me)

    def found(self, me: str) -> None:
        """`me` reserved a row: if a ring woke it for that, wake the next waiting slot."""
        if me in self._rung:
            with self._lock:
                self._rung.discard(me)
            self.ring()

    def delay(self) -> float:
        """Seconds until the earliest future run_at of a row we could run, or sleep_delay."""
        longest = self.config.sleep_delay
        if longest <= 0:
            return 0.0
        now = self.clock.now()
        try:
            nxt = self.next_run_at(now, now + timedelta(seconds=longest))
        except Exception as exc:  # the database, or a bug: the slot sleeps sleep_delay
            log.debug("wakeup.next_run_at_failed", error=short_error(exc))
            return longest
        if nxt is None:
            return longest
        return min(longest, max((nxt - now).total_seconds() + AFTER_RUN_AT, MIN_SLEEP))

    def next_run_at(self, now: datetime, until: datetime) -> datetime | None:
        """The earliest run_at in (now, until] of an unlocked row we could run, or None."""
        store, stmts = self.store, self.statements
        params = dict(store.sql.constants, now=store.ts(now), until=until)
        earliest: datetime | None = None
        with store.db.connection() as conn:
            priority = conn.execute(stmts.first_priority).scalar()
            for _ in range(MAX_PRIORITIES):
                if priority is None:
                    break
                found = _naive(conn.execute(stmts.next_run_at,
                                            dict(params, priority=priority)).scalar())
                if found is not None and (earliest is None or found < earliest):
                    earliest = found
                priority = conn.execute(stmts.next_priority, {"after": priority}).scalar()
        return earliest

    def close(self) -> None:
        _LIVE.discard(self)


class Prober(Looping):
    """One per worker process: every idle_poll, while a slot is idle, one primary-key-only
    query; when rows were added, one more (a key range) asks whether one is ours, and rings.

    On a SQLite table without AUTOINCREMENT, ids are reused (Statements.top_row): the look
    reads the top row's created_at too. A top row created after the one seen is new even
    with an id already seen: it rings (new rows may sit below it, ids the key range cannot
    tell from old ones). Rows added above the one seen are asked about as usual, once the
    row seen is found unchanged (it was not replaced meanwhile)."""

    thread_name = "dj-prober"

    def __init__(self, wakeup: Wakeup, interval: float) -> None:
        super().__init__()
        self.wakeup, self.interval = wakeup, interval
        self.paused = threading.Event()  # notifications are live (notify.py): no need to look
        self._seen: int | None = None
        self._seen_at: Any = None  # the top row's created_at, where ids are reused
        self._reuses_ids: bool | None = None  # looked up at the first probe
        self._failing = False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.paused.is_set():
                self._seen = None  # the rows added meanwhile were notified
                continue
            if not self.wakeup.idle:
                continue  # a busy slot reserves again by itself
            try:
                self.probe()
            except Exception as exc:  # the database, or a bug: never end the thread
                self._seen = self._reuses_ids = None
                if not self._failing:
                    log.warning("wakeup.probe_failed", error=short_error(exc),
                                hint="idle slots fall back to polling every sleep_delay")
                self._failing = True
            else:
                self._failing = False

    def probe(self) -> bool:
        """One look; True when it rang."""
        store, stmts = self.wakeup.store, self.wakeup.statements
        with store.db.connection() as conn:
            if self._reuses_ids is None:
                self._reuses_ids = stmts.is_sqlite and _reuses_ids(
                    conn.execute(stmts.table_sql, {"name": store.config.table_name}).scalar())
            if self._reuses_ids:
                row = conn.execute(stmts.top_row).first()
                top, top_at = (int(row[0]), row[1]) if row is not None else (0, None)
            else:
                top, top_at = conn.execute(stmts.top_id).scalar() or 0, None
            seen, seen_at = self._seen, self._seen_at
            self._seen, self._seen_at = top, top_at
            if seen is None:  # the first look (or after an error): rows may have come meanwhile
                self.wakeup.ring()
                return True
            if self._reuses_ids and _newer(top_at, seen_at) and (
                    top <= seen
                    or conn.execute(stmts.created_at, {"id": seen}).scalar() != seen_at):
                self.wakeup.ring()  # a new row with an id seen before (see the class)
                return True
            if top <= seen:
                return False
            added: Any = conn.execute(stmts.added, dict(store.sql.constants, seen=seen, top=top)).scalar()
        if added is None:
            return False
        self.wakeup.ring()
        return True


def ring_local(config: Config) -> None:
    """An enqueue in this process: wake the idle slots of the workers here on that table."""
    if not _LIVE:
        return
    for wakeup in list(_LIVE):
        cfg = wakeup.config
        if cfg.table_name == config.table_name and cfg.url == config.url:
            wakeup.ring()


def _reuses_ids(create_table: str | None) -> bool:
    """Does SQLite give a new row the id of a deleted top row (no AUTOINCREMENT)?"""
    return create_table is not None and "AUTOINCREMENT" not in create_table.upper()


def _newer(value: Any, than: Any) -> bool:
    """Is created_at `value` later than `than` (SQLite's text; unreadable text: different)?"""
    if value is None:
        return False  # no created_at: a reused id goes unnoticed (polling finds the row)
    if than is None:
        return True
    try:
        return bool(_naive(value) > _naive(than))  # type: ignore[operator]
    except (TypeError, ValueError):
        return bool(value != than)


def _naive(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
