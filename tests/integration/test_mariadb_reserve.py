"""MariaDB's one-round-trip reserve (Store._reserve_skip_locked_scripted): a job Psych wrote
is deleted-after-success, found, claimed and read in one statement sent to the server; rows
that only resemble ours are never written to; escaping holds in every sql_mode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dj_consumer import Registry, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.reserve import mark
from dj_consumer.ruby_yaml import dump_handler
from tests.conftest import DB
from tests.integration.test_protocol import obj


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every command PyMySQL sends from this thread (work_off's), by its first word; other
    threads (heartbeats, earlier tests' workers) are not counted. The server is real."""
    import threading

    import pymysql.connections

    seen: Counter[str] = Counter()
    original = pymysql.connections.Connection._execute_command
    me = threading.get_ident()

    def counted(self: Any, command: int, sql: Any) -> Any:
        if threading.get_ident() == me:
            text = sql.decode() if isinstance(sql, bytes) else str(sql)
            seen[text.split(None, 1)[0].upper() if command == 3 and text.strip() else str(command)] += 1
        return original(self, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counted)
    # A reserve slower than MARK_MIN_SCAN (a loaded machine) sets the backlog mark; a reserve
    # that finds nothing past it looks again from the start: one more statement than counted.
    monkeypatch.setattr(mark, "MARK_MIN_SCAN", float("inf"))
    yield seen


def _url(db: DB, sql_mode: str | None) -> str:
    if sql_mode is None:
        return db.url
    url = sa.engine.make_url(db.url).update_query_dict(
        {"init_command": f"SET SESSION sql_mode = '{sql_mode}'"})
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize(("sql_mode", "as_mysql"), [
    (None, False), ("NO_BACKSLASH_ESCAPES,ANSI_QUOTES", False),
    # MySQL 8 gets the same script as multi-statements, with LIKE instead of the regex; no
    # MySQL server here, so that form runs on MariaDB, which accepts it too.
    (None, True)])
def test_one_round_trip_per_job_for_what_psych_writes(
        mariadb_db: DB, commands: Counter[str], monkeypatch: pytest.MonkeyPatch,
        sql_mode: str | None, as_mysql: bool) -> None:
    if as_mysql:
        from dj_consumer.db import ServerInfo

        monkeypatch.setattr(ServerInfo, "mariadb", property(lambda self: False))
    ran: list[Any] = []
    reg = Registry()
    reg.run("Billing::ChargeJob")(lambda j: ran.append((j.payload, j.run_at)))
    w = make_worker(mariadb_db.config(database_url=_url(mariadb_db, sql_mode)), reg)
    assert w.work_off() == (0, 0)  # start-up (schema, version, indexes) is behind us
    handlers = [dump_handler("Billing::ChargeJob", {"n": 1}, shape="object"),
                dump_handler("Billing::ChargeJob", {"n": 2}, shape="struct"),
                obj("Billing::ChargeJob"),
                dump_handler("Billing::ChargeJob", [3], shape="active_job")]
    when = SystemClock().now().replace(microsecond=0) - timedelta(minutes=1)
    mariadb_db.insert_many(handlers, run_at=when)
    commands.clear()
    assert w.work_off() == (4, 0)
    sent = dict(commands)
    assert len(ran) == 4
    assert mariadb_db.count() == 0
    # The row came back through session variables; its run_at is still a datetime, and right.
    assert [run_at for _, run_at in ran] == [when] * 4
    # Four reserves that each found a job and one that found none, each deleting the success
    # before it: one compound statement (BEGIN NOT ATOMIC … END) each, nothing else.
    assert sent == ({"START": 5} if as_mysql else {"BEGIN": 5})


def test_a_delay_job_is_parsed_before_it_is_claimed(mariadb_db: DB, commands: Counter[str]) -> None:
    # No beginning says "User#send_welcome" for sure: the row is read, checked, then claimed
    # if still ready (one more statement), never written to before the check.
    from tests.unit.conftest_yaml import fixtures

    handler = next(f for f in fixtures() if f.slug == "pm_ar_instance").handler
    reg = Registry()
    reg.run("User#send_welcome")(lambda j: None)
    w = make_worker(mariadb_db.config(), reg)
    w.work_off()
    mariadb_db.insert(handler)
    commands.clear()
    assert w.work_off() == (1, 0)
    sent = dict(commands)
    assert mariadb_db.count() == 0
    assert sent == {"BEGIN": 2, "UPDATE": 1}


def test_rows_that_only_look_like_ours_are_never_written(mariadb_db: DB) -> None:
    """A trigger records every write to the look-alike rows: there must be none. Among them a
    hand-written handler that begins exactly like a Psych object of ours but is an empty
    document (nil to Psych): claimed in the script, it is handed straight back, once."""
    db = mariadb_db
    reg = Registry()
    reg.run("Foo")(lambda j: None)
    now = SystemClock().now().replace(microsecond=0)
    early = now - timedelta(minutes=10)
    lookalikes = [db.insert(obj("FooBar", n=i), run_at=early) for i in range(5)]
    # The script looks at the first ready row: `foo` (MariaDB's text comparison ignores
    # case) in the first round, a longer name in the next, then the trap.
    lookalikes.append(db.insert(obj("foo", n=1), run_at=now - timedelta(minutes=40)))
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {db.table}_audit (id int, locked_by varchar(255))"))
        conn.execute(sa.text(
            f"CREATE TRIGGER {db.table}_t BEFORE UPDATE ON {db.table} FOR EACH ROW "
            f"IF NEW.handler NOT LIKE BINARY '%ours%' "
            f"THEN INSERT INTO {db.table}_audit VALUES (NEW.id, NEW.locked_by); END IF"))
    try:
        w = make_worker(db.config(), reg)
        for round_ in range(4):
            if round_ == 1:
                lookalikes.append(db.insert(obj("Foo::Bar", n=1), run_at=now - timedelta(minutes=50)))
            if round_ == 2:
                trap = db.insert("--- !ruby/object:Foo\n...\n", run_at=now - timedelta(minutes=60))
            ours = db.insert(obj("Foo", n="ours"))
            assert w.work_off() == (1, 0)
            assert db.row(ours) is None
        for job_id in [*lookalikes, trap]:
            row = db.row(job_id)
            assert (row.locked_by, row.locked_at, row.attempts, row.failed_at) == (None, None, 0, None)
        with db.engine.connect() as conn:
            audit = conn.execute(sa.text(f"SELECT id, locked_by FROM {db.table}_audit")).all()
        # Only the trap was written to: claimed and handed back, once (not on every reserve).
        assert [(r.id, r.locked_by is None) for r in audit] == [(trap, False), (trap, True)]
    finally:
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {db.table}_audit"))


def test_a_parser_bug_after_a_sure_claim_leaves_the_row_unlocked(
        mariadb_db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    """The script claims and commits a sure row before the client parses it; if parsing then
    raises something unexpected, the row is handed back rather than left locked by us."""
    import dj_consumer.slots as slots_module

    reg = Registry()
    reg.run("Foo")(lambda j: None)
    w = make_worker(mariadb_db.config(), reg)
    w.work_off()
    job_id = mariadb_db.insert(obj("Foo", n=1))

    def parser_bug(handler: str, config: Any) -> Any:
        raise RecursionError("a bug of ours")

    monkeypatch.setattr(slots_module, "_parse", parser_bug)
    with pytest.raises(RecursionError):
        w.work_off()
    row = mariadb_db.row(job_id)
    assert (row.locked_by, row.locked_at, row.attempts) == (None, None, 0)
    monkeypatch.undo()
    assert w.work_off() == (1, 0)
