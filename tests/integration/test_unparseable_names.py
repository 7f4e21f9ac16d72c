"""An unparseable handler is failed at once (Ruby's DeserializationError) when its name is
ours, and that name is the one the intact handler would have had: an ActiveJob's job_class,
a `.delay` call's receiver#method — not the wrapper class Ruby's fallback regex finds.
Rows of other names are never written."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from structlog.testing import capture_logs

from dj_consumer import Registry, make_worker
from dj_consumer.clock import SystemClock
from dj_consumer.ruby_yaml import dump_handler
from tests.conftest import DB

# Valid YAML whose ActiveJob argument is not a Date: Ruby's deserialize raises.
BAD_DATE = "  - _aj_serialized: ActiveJob::Serializers::DateSerializer\n    value: not-a-date\n"


def broken_active_job(job_class: str) -> str:
    """What Rails wrote for `job_class`, with a broken argument (the beginning is intact)."""
    handler = dump_handler(job_class, [1], shape="active_job")
    assert "  arguments:\n  - 1\n" in handler  # Psych's layout: the sequence is not indented
    return handler.replace("  arguments:\n  - 1\n", "  arguments:\n" + BAD_DATE)


def broken_yaml_active_job(job_class: str) -> str:
    return dump_handler(job_class, [1], shape="active_job") + "  oops: [unclosed\n"


def collapsed_receiver(receiver: str, method: str) -> str:
    """A `.delay` call on a record whose indentation was lost (no id: Ruby cannot load it)."""
    return (f"--- !ruby/object:Delayed::PerformableMethod\nobject: !ruby/ActiveRecord:{receiver}\n"
            f" attributes:\n id: 1\n name: Alice\nmethod_name: :{method}\nargs: []\n")


def registry(failures: list[str]) -> Registry:
    reg = Registry()
    for name in ("HelloJob", "User#send_welcome"):
        reg.run(name)(lambda j: None)
        reg.failure(name)(lambda j, exc, name=name: failures.append(name))
    return reg


def test_unparseable_rows_of_our_names_fail_at_once_and_others_are_untouched(db: DB) -> None:
    failures: list[str] = []
    ours = [db.insert(broken_active_job("HelloJob"), attempts=3),
            db.insert(broken_yaml_active_job("HelloJob")),
            db.insert(collapsed_receiver("User", "send_welcome"))]
    theirs = [db.insert(broken_active_job("OtherJob")),
              db.insert(broken_yaml_active_job("HelloJobs")),
              db.insert(collapsed_receiver("Admin", "send_welcome")),
              db.insert(collapsed_receiver("User", "send_welcome_back"))]
    w = make_worker(db.config(), registry(failures))
    assert w.work_off() == (0, 3)
    for job_id, attempts in zip(ours, (3, 0, 0), strict=True):
        row = db.row(job_id)
        assert row.failed_at is not None, job_id
        assert (row.locked_by, row.locked_at, row.attempts) == (None, None, attempts)
        assert row.last_error.startswith("Job failed to load: ")
    assert sorted(failures) == ["HelloJob", "HelloJob", "User#send_welcome"]
    for job_id in theirs:
        row = db.row(job_id)
        assert (row.locked_by, row.locked_at, row.failed_at, row.attempts) == (None, None, None, 0)
    assert w.work_off() == (0, 0)


def test_a_sure_claim_of_an_unparseable_active_job_fails_it_once(mariadb_db: DB) -> None:
    """MariaDB's one-round-trip reserve claims a row that begins like Psych's dump of one of
    our job classes before parsing it: broken further on, it is failed in that same reserve —
    not handed back, warned about and claimed again every few minutes."""
    db = mariadb_db
    failures: list[str] = []
    w = make_worker(db.config(), registry(failures))
    w.work_off()  # start-up (schema, server version) is behind us
    early = SystemClock().now().replace(microsecond=0) - timedelta(minutes=5)
    bad = db.insert(broken_active_job("HelloJob"), run_at=early)
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {db.table}_audit (id int, locked_by varchar(255), "
                             "failed int)"))
        conn.execute(sa.text(
            f"CREATE TRIGGER {db.table}_t BEFORE UPDATE ON {db.table} FOR EACH ROW "
            f"INSERT INTO {db.table}_audit VALUES (NEW.id, NEW.locked_by, NEW.failed_at IS NOT NULL)"))
    try:
        with capture_logs() as logs:
            good = db.insert(dump_handler("HelloJob", [2], shape="active_job"))
            assert w.work_off() == (1, 1)
            assert w.work_off() == (0, 0)
        events = [entry["event"] for entry in logs]
        assert "reserve.not_ours_after_all" not in events
        assert events.count("job.unparseable") == 1
        with db.engine.connect() as conn:
            audit: list[Any] = conn.execute(sa.text(
                f"SELECT id, locked_by IS NULL, failed FROM {db.table}_audit WHERE id = :id"),
                {"id": bad}).all()
        # Claimed by the script, then failed (and unlocked) in one write: nothing else.
        assert [tuple(r) for r in audit] == [(bad, 0, 0), (bad, 1, 1)]
        assert db.row(bad).failed_at is not None
        assert db.row(good) is None
        assert failures == ["HelloJob"]
    finally:
        with db.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {db.table}_audit"))


def test_a_job_over_the_handler_caps_fails_naming_the_setting(db: DB) -> None:
    ran: list[int] = []
    reg = Registry()
    reg.run("HelloJob")(lambda j: ran.append(len(j.payload["arguments"][0])))
    small = dump_handler("HelloJob", [[1] * 10], shape="active_job")
    big = dump_handler("HelloJob", [[1] * 400], shape="active_job")
    many = dump_handler("HelloJob", [[1] * 100], shape="active_job")
    assert len(small) < 3000 < len(big) and len(many) < 3000
    ids = [db.insert(h) for h in (small, big, many)]
    w = make_worker(db.config(max_handler_bytes=3000, max_handler_values=100), reg)
    assert w.work_off() == (1, 2)
    assert ran == [10]
    big_row, many_row = db.row(ids[1]), db.row(ids[2])
    assert big_row.failed_at is not None and many_row.failed_at is not None
    assert "byte limit (the max_handler_bytes setting)" in big_row.last_error
    assert "values after expanding aliases (the max_handler_values setting)" in many_row.last_error
