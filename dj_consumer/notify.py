"""PostgreSQL LISTEN/NOTIFY (docs/operations.md "Pick-up latency"): an opt-in trigger on the delayed_jobs
table NOTIFYs when a row may have become ready; each worker process LISTENs on a dedicated
connection and rings its idle slots at once.

The trigger only notifies: Rails and Ruby workers write as before (each inserting or
unlocking transaction sends one notification at commit; identical ones in one transaction
are folded by PostgreSQL). A lost notification costs at most one poll: polling at
sleep_delay stays, and while the LISTEN connection is down the prober (wakeup.py) looks
instead, until the listener is back.
"""

from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from dj_consumer.looping import Looping

if TYPE_CHECKING:
    from dj_consumer.store import Store
    from dj_consumer.wakeup import Wakeup

log = structlog.get_logger(__name__)

#: Seconds between attempts to LISTEN again after the connection was lost (doubling).
RETRY_FIRST, RETRY_MAX = 0.5, 30.0
#: How long the listener waits for its own test notification before trusting the channel.
SELF_TEST = 5.0


class Names:
    """The trigger's function, its two triggers and the channel, for one table (each within
    PostgreSQL's 63-byte identifiers)."""

    def __init__(self, table: str) -> None:
        base = table[:44]
        self.table = table
        self.function = f"{base}_dj_notify"
        self.on_insert = f"{base}_dj_notify_insert"
        self.on_update = f"{base}_dj_notify_update"
        self.channel = f"{base}_dj_ready"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def trigger_sql(table: str) -> list[str]:
    """The statements that install (or replace) the trigger, in order."""
    n = Names(table)
    channel = n.channel.replace("'", "''")
    return [
        f"CREATE OR REPLACE FUNCTION {_q(n.function)}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n  PERFORM pg_notify('{channel}', '');\n  RETURN NULL;\nEND\n$$",
        f"DROP TRIGGER IF EXISTS {_q(n.on_insert)} ON {_q(table)}",
        # Once per INSERT statement: a bulk insert is one notification.
        f"CREATE TRIGGER {_q(n.on_insert)} AFTER INSERT ON {_q(table)} "
        f"FOR EACH STATEMENT EXECUTE PROCEDURE {_q(n.function)}()",
        f"DROP TRIGGER IF EXISTS {_q(n.on_update)} ON {_q(table)}",
        # Updates that make a row ready sooner: run_at moved earlier, a lock cleared (a
        # retry scheduled, a job released), failed_at cleared (a retry by hand). A claim, a
        # lease renewal or a failure notifies nobody.
        f"CREATE TRIGGER {_q(n.on_update)} AFTER UPDATE ON {_q(table)} FOR EACH ROW WHEN "
        "(NEW.failed_at IS NULL AND (NEW.run_at < OLD.run_at "
        "OR (OLD.locked_at IS NOT NULL AND NEW.locked_at IS NULL) "
        f"OR OLD.failed_at IS NOT NULL)) EXECUTE PROCEDURE {_q(n.function)}()",
    ]


def drop_sql(table: str) -> list[str]:
    n = Names(table)
    return [f"DROP TRIGGER IF EXISTS {_q(n.on_insert)} ON {_q(table)}",
            f"DROP TRIGGER IF EXISTS {_q(n.on_update)} ON {_q(table)}",
            f"DROP FUNCTION IF EXISTS {_q(n.function)}()"]


def rails_migration(table: str, *, version: str = "6.1") -> str:
    """`dj-consumer schema --notify --rails`: the same trigger as a Rails migration."""
    def heredoc(statements: list[str]) -> list[str]:
        body = ";\n".join(statements) + ";"
        return ["    execute <<~SQL", *("      " + line if line else "" for line in body.splitlines()),
                "    SQL"]

    lines = [
        f"class AddDjConsumerNotifyTo{_camel(table)} < ActiveRecord::Migration[{version}]",
        "  # PostgreSQL only: dj_consumer workers LISTEN and pick new jobs up at once; Ruby",
        "  # workers and Rails are unaffected (the trigger only notifies).",
        "  def up",
        *heredoc(trigger_sql(table)),
        "  end",
        "",
        "  def down",
        *heredoc(drop_sql(table)),
        "  end",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _camel(table: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in table.split("_") if part.isalnum())


def install(store: Store) -> None:
    """Install (or replace) the trigger on the store's table, in one transaction."""
    with store.db.tx_engine.begin() as conn:
        for statement in trigger_sql(store.config.table_name):
            conn.exec_driver_sql(statement)


def installed(store: Store) -> bool:
    """Are both of the table's notify triggers there (PostgreSQL)?"""
    if store.dialect != "postgresql":
        return False
    n = Names(store.config.table_name)
    with store.engine.connect() as conn:
        found = conn.execute(text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:t) "
            "AND tgname IN (:a, :b) AND NOT tgisinternal"),
            {"t": _q(n.table), "a": n.on_insert, "b": n.on_update}).scalar()
    return found == 2


class Listener(Looping):
    """One per worker process: LISTEN on a dedicated connection, ring on every notification.

    `live` is set while notifications are known to arrive (its own test notification came
    back after LISTEN); the prober pauses meanwhile. Through PgBouncer in transaction mode
    LISTEN cannot work (the server connection is handed to others between transactions): the
    test notification never comes back, and the prober keeps looking."""

    thread_name = "dj-listener"

    def __init__(self, store: Store, wakeup: Wakeup, live: threading.Event) -> None:
        super().__init__()
        self.store, self.wakeup, self.live = store, wakeup, live
        self.channel = Names(store.config.table_name).channel
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        from dj_consumer.db import io_timeout

        url = self.store.config.url.set(drivername="postgresql")
        return psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=10,
            application_name="dj_consumer listen", keepalives=1, keepalives_idle=30,
            keepalives_interval=10, keepalives_count=3,
            tcp_user_timeout=int(io_timeout(self.store.config) * 1000))

    def _loop(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # the connection, or a bug: never end the thread
                self.live.clear()
                log.warning("wakeup.listen_lost", error=str(exc).strip().splitlines()[0]
                            if str(exc).strip() else type(exc).__name__, retry_s=delay,
                            hint="idle slots fall back to the prober (idle_poll) and polling")
                self._stop.wait(delay)
                delay = min(2 * delay, RETRY_MAX)
            else:
                delay = RETRY_FIRST

    def _listen(self) -> None:
        conn = self._conn = self._connect()
        try:
            conn.execute(f"LISTEN {_q(self.channel)}")
            token = "dj-selftest-" + secrets.token_hex(4)
            conn.execute(f"NOTIFY {_q(self.channel)}, '{token}'")  # (hex: nothing to quote)
            tested = False
            waited = 0.0
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    if note.payload == token:
                        tested = True
                        self.live.set()
                        log.info("wakeup.listening", channel=self.channel)
                        # Rows may have come while nobody listened: look once.
                        self.wakeup.ring()
                    elif not note.payload.startswith("dj-selftest-"):
                        self.wakeup.ring()
                if not tested:
                    waited += 0.5
                    if waited >= SELF_TEST:
                        log.warning("wakeup.notify_silent", channel=self.channel,
                                    hint="LISTEN was accepted but our own test notification "
                                         "never arrived (PgBouncer in transaction mode?): "
                                         "the prober (idle_poll) and polling wake idle slots")
                        tested = True  # said once; keep listening, in case they do arrive
        finally:
            self.live.clear()
            self._conn = None
            conn.close()
