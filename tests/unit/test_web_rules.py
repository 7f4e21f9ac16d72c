"""The dashboard's rules without a database: the "nobody runs this" list, what counts as
progress between two status passes, and the sign-in / CSRF / Host decisions."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest
from starlette.requests import HTTPConnection

from dj_consumer.admin import Filter, NameStatus
from dj_consumer.config import Config
from dj_consumer.errors import ConfigError
from dj_consumer.web.security import Guard, is_loopback
from dj_consumer.web.snapshot import Snapshot, nobody_runs, progressed, workers

NOW = datetime(2026, 1, 1, 12, 0, 0)
URL = "sqlite:///unused.db"


def line(name: str, queue: str | None = "default", *, ready: int = 0, running: int = 0,
         waited: float | None = None, **more: int) -> NameStatus:
    oldest = None if waited is None else NOW - timedelta(minutes=waited)
    return NameStatus(queue, name, ready=ready, running=running, oldest_ready=oldest, **more)


def snap(lines: list[NameStatus], progress: dict[tuple[str | None, str], datetime] | None = None,
         ) -> Snapshot:
    return Snapshot(NOW, 0.1, lines, [], progress or {}, NOW - timedelta(hours=1))


# -- nobody runs this ------------------------------------------------------------------------


def test_nobody_runs_lists_long_waiting_names_no_one_was_seen_running() -> None:
    lines = [
        line("Stuck", ready=3, waited=11),
        line("Stuck", queue=None, ready=1, waited=30),  # per queue: the nil queue too
        line("Fresh", ready=3, waited=9),  # not waiting long enough yet
        line("Python", ready=3, waited=60),  # registered here
        line("Running", ready=3, waited=60, running=1),  # a worker holds one now
        line("SeenRecently", ready=3, waited=60),
        line("SeenLongAgo", ready=3, waited=60),
        line("OnlyScheduled", scheduled=5),
        line("OnlyFailed", failed=5),
    ]
    progress = {("default", "SeenRecently"): NOW - timedelta(minutes=9),
                ("default", "SeenLongAgo"): NOW - timedelta(minutes=10)}
    got = [(s.queue, s.name) for s in nobody_runs(snap(lines, progress), ["Python"])]
    assert got == [("default", "Stuck"), (None, "Stuck"), ("default", "SeenLongAgo")]


@pytest.mark.parametrize(("before", "after", "moved"), [
    (None, line("A", ready=5, waited=20), False),  # first sight: nothing to compare
    (None, line("A", ready=5, waited=20, running=1), True),  # a lock is progress
    (line("A", ready=5, waited=20), line("A", ready=4, waited=20), True),  # one taken
    (line("A", ready=5, waited=20), line("A", ready=7, waited=15), True),  # the oldest taken
    (line("A", ready=5, waited=20), line("A", ready=7, waited=20), False),  # only more came
    (line("A", ready=5, waited=20), line("A", ready=0), True),  # all gone
    (line("A", ready=0), line("A", ready=3, waited=1), False),
])
def test_progress_between_passes(before: NameStatus | None, after: NameStatus,
                                 moved: bool) -> None:
    assert progressed(before, after) is moved


def test_workers_merge_lines_and_tell_python_leases_from_the_rest() -> None:
    a = line("A", running=2)
    a.holders = {"py host:h pid:1": (2, NOW - timedelta(seconds=40))}
    b = line("B", running=3)
    b.holders = {"py host:h pid:1": (1, NOW - timedelta(seconds=70)),
                 "host:rb pid:9": (2, NOW - timedelta(hours=1))}
    got = workers([a, b], Config(database_url=URL))
    assert [(w.locked_by, w.python, w.jobs, w.oldest_lock) for w in got] == [
        ("host:rb pid:9", False, 2, NOW - timedelta(hours=1)),
        ("py host:h pid:1", True, 3, NOW - timedelta(seconds=70)),
    ]


def test_counts_for_a_filter_come_from_the_pass() -> None:
    s = snap([line("A", ready=2, failed=1), line("A", queue=None, ready=5, scheduled=1),
              line("B", running=4)])
    assert s.count(Filter()) == 13
    assert s.count(Filter(name="A", state="ready")) == 7
    assert s.count(Filter(queue="nil")) == 6
    assert s.count(Filter(queue="default", state="failed")) == 1
    assert s.totals() == {"ready": 7, "scheduled": 1, "running": 4, "failed": 1}


# -- sign-in, CSRF, Host -----------------------------------------------------------------------


def conn(headers: dict[str, str], path: str = "/") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "method": "GET", "path": path, "headers": raw,
                           "scheme": "http", "server": ("127.0.0.1", 8500), "query_string": b""})


def test_only_loopback_without_an_auth() -> None:
    assert Guard.from_config(Config(database_url=URL)).kind is None
    for host in ("::1", "localhost", "127.0.0.2"):
        assert Guard.from_config(Config(database_url=URL, web_host=host)).kind is None
    with pytest.raises(ConfigError, match="reachable from other hosts"):
        Guard.from_config(Config(database_url=URL, web_host="0.0.0.0"))
    guard = Guard.from_config(Config(database_url=URL, web_host="0.0.0.0",
                                     web_auth="token:" + "s" * 16))
    assert guard.kind == "token"
    assert [is_loopback(h) for h in ("[::1]", "10.0.0.1", "evil.example")] == [True, False, False]


def test_host_header_decides_without_an_auth() -> None:
    guard = Guard(None)
    assert guard.host_ok(conn({"host": "127.0.0.1:8500"}))
    assert guard.host_ok(conn({"host": "[::1]:8500"}))
    assert not guard.host_ok(conn({"host": "rebound.evil.example:8500"}))
    assert not guard.host_ok(conn({}))
    assert Guard("basic", "u:p").host_ok(conn({"host": "jobs.example"}))


def test_identities() -> None:
    token = Guard("token", "s" * 16)
    assert token.identity(conn({"authorization": "Bearer " + "s" * 16})) == "token"
    assert token.identity(conn({"authorization": "Bearer " + "s" * 15})) is None
    cookie = token.login("s" * 16)
    assert cookie is not None and token.login("nope") is None
    assert token.identity(conn({"cookie": f"dj_session={cookie}"})) == "token"
    expires, mac = cookie.split(".")
    forged = f"{expires}.{'1' if mac[0] == '0' else '0'}{mac[1:]}"
    assert token.identity(conn({"cookie": f"dj_session={forged}"})) is None
    # Another process (a restart) signs with another key: the old cookie is void.
    assert Guard("token", "s" * 16).identity(conn({"cookie": f"dj_session={cookie}"})) is None
    basic = Guard("basic", "ops:pa:ss")
    auth = "Basic " + base64.b64encode(b"ops:pa:ss").decode()
    assert basic.identity(conn({"authorization": auth})) == "ops"
    assert basic.identity(conn({"authorization": "Basic !!!"})) is None
    header = Guard("header", header="X-User")
    assert header.identity(conn({"x-user": "alice"})) == "alice"
    assert header.identity(conn({})) is None


def test_csrf_is_bound_to_the_identity_and_the_site() -> None:
    guard = Guard("basic", "ops:pw")
    token = guard.csrf_token("ops")
    here = conn({"host": "jobs.example", "origin": "https://jobs.example"})
    assert guard.may_change(here, "ops", token) is None
    assert "CSRF" in (guard.may_change(here, "eve", token) or "")
    assert "CSRF" in (guard.may_change(here, "ops", "") or "")
    elsewhere = conn({"host": "jobs.example", "origin": "https://evil.example"})
    assert "another site" in (guard.may_change(elsewhere, "ops", token) or "")
    by_referer = conn({"host": "jobs.example", "referer": "https://evil.example/x"})
    assert "another site" in (guard.may_change(by_referer, "ops", token) or "")


def test_web_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="16 characters"):
        Config(database_url=URL, web_auth="token:short")
    with pytest.raises(ConfigError, match="a user and a password"):
        Config(database_url=URL, web_auth="basic:ops")
    with pytest.raises(ConfigError, match="got bearer:…"):
        Config(database_url=URL, web_auth="bearer:xyz")
    with pytest.raises(ConfigError, match="header name"):
        Config(database_url=URL, web_auth_header="X User")
    with pytest.raises(ConfigError, match="0-65535"):
        Config(database_url=URL, web_port=70000)
    assert "s" * 16 not in repr(Config(database_url=URL, web_auth="token:" + "s" * 16))


def test_accepted_connections_send_at_once() -> None:
    """The socket `dj-consumer web` binds itself must give asyncio's accepted connections
    TCP_NODELAY: without it every kept-alive answer waited 40 ms for a delayed ACK (found by
    `make bench`; fails before the fix: the socket was made without IPPROTO_TCP)."""
    import asyncio
    import socket

    from dj_consumer.web import bind

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        sock = bind("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(seen, 30)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
