from __future__ import annotations

import pytest

from dj_consumer.config import Config
from dj_consumer.diagnose import advise, render
from dj_consumer.schema import REQUIRED_COLUMNS
from dj_consumer.store import ServerInfo, mysql_has_skip_locked

CFG = Config(database_url="mysql+pymysql://root@127.0.0.1/test")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True),
        ("10.6.0-MariaDB", True),
        ("10.5.23-MariaDB-log", False),
        ("10.3.39-MariaDB-0+deb10u1", False),
        ("8.0.1", True),
        ("8.0.0-dmr", False),
        ("5.7.44-log", False),
        ("8.4.3", True),
    ],
)
def test_skip_locked_by_server_version(version: str, expected: bool) -> None:
    assert mysql_has_skip_locked(version) is expected


def test_old_server_is_reported_with_what_to_do() -> None:
    server = ServerInfo("mysql", "10.5.23-MariaDB", skip_locked=False)
    text = render(advise(CFG, server, list(REQUIRED_COLUMNS), [["priority", "run_at"]], 0.2))
    assert "WARN  server 10.5.23-MariaDB has no SKIP LOCKED (MariaDB >= 10.6, MySQL >= 8.0.1)" in text
    assert "default_sql" in text


def test_missing_priority_index_and_clock_skew() -> None:
    server = ServerInfo("postgresql", "15.2", skip_locked=True)
    text = render(advise(CFG, server, list(REQUIRED_COLUMNS), [], -42.0))
    assert "no index on (priority, run_at)" in text
    assert "this host's clock is -42.0s off the database's" in text


def test_privileges_are_reported_only_where_they_were_asked() -> None:
    server = ServerInfo("mysql", "10.11.6-MariaDB", skip_locked=True)
    columns, indexes = list(REQUIRED_COLUMNS), [["priority", "run_at"]]
    assert "database user" not in render(advise(CFG, server, columns, indexes, 0.0))
    text = render(advise(CFG, server, columns, indexes, 0.0, ["UPDATE", "DELETE"]))
    assert "ERROR the database user may not UPDATE or DELETE on table 'delayed_jobs'" in text
    text = render(advise(CFG, server, columns, indexes, 0.0, []))
    assert "ok    the database user may SELECT, UPDATE, DELETE and INSERT" in text
