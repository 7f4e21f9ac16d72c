"""`dj-consumer web` over plain HTTP: who may see it, which requests may change anything, and
that a retry or delete is fenced. A real server process on 127.0.0.1, a real SQLite table."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from dj_consumer.clock import SystemClock
from tests.conftest import DB
from tests.integration.test_operator import cli, fill
from tests.integration.test_protocol import obj
from tests.webserver import WebServer, wait_for, web_server

TOKEN = "t0ken-for-the-dashboard-tests"


def csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def snapshot(db: DB) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in db.rows()]


@pytest.fixture
def server(sqlite_db: DB, tmp_path: Path) -> Iterator[WebServer]:
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path) as s:
        yield s


def client(server: WebServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=30, **kwargs)


def failed_row(db: DB, **cols: Any) -> int:
    now = SystemClock().now().replace(microsecond=0)
    values = {"failed_at": now - timedelta(minutes=1), "attempts": 3, "last_error": "boom",
              **cols}
    return db.insert(obj("NewsletterJob", n=1), **values)


# -- reads ---------------------------------------------------------------------------------------


def test_pages_answer_with_strict_headers_and_change_nothing(sqlite_db: DB,
                                                             server: WebServer) -> None:
    ids = fill(sqlite_db)
    before = snapshot(sqlite_db)
    with client(server) as c:
        for path in ["/", "/fragments/overview", "/fragments/totals", "/jobs", "/failed",
                     "/jobs?state=running&queue=mail", "/jobs?q=list_id", f"/jobs/{ids['failed']}",
                     f"/jobs/{ids['broken']}", "/failed?do=retry-all&confirmed=yes",
                     "/static/htmx.min.js", "/static/style.css"]:
            r = c.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"
        assert c.get("/jobs/999999").status_code == 404
        # The action exists only as a POST: a GET (a link, an <img>) cannot retry anything.
        assert c.get("/failed/action?do=retry-all&confirmed=yes").status_code == 405
        assert c.put("/failed/action").status_code == 405
        assert c.get("/jobs?state=bogus").status_code == 400
    assert snapshot(sqlite_db) == before


def test_the_job_page_says_why_and_shows_the_parse_error(sqlite_db: DB, server: WebServer) -> None:
    ids = fill(sqlite_db)
    with client(server) as c:
        page = c.get(f"/jobs/{ids['failed']}").text
        assert "KeyError: &#39;email&#39;" in page and "jobs.py:3:in `perform&#39;" in page
        assert "failed for good at" in page  # diagnose.why's reason
        assert "&#34;list_id&#34;: 6" in page  # the payload as JSON
        broken = c.get(f"/jobs/{ids['broken']}").text
        assert 'id="parse-error"' in broken and "BrokenJob" in broken


def test_a_foreign_host_header_is_refused_without_auth(server: WebServer) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 reaches the port, but its
    requests carry Host: evil.example."""
    with client(server) as c:
        assert c.get("/", headers={"host": "evil.example"}).status_code == 400
        assert c.get("/", headers={"host": "localhost:1234"}).status_code == 200


# -- state changes -------------------------------------------------------------------------------


def test_retry_needs_a_post_with_csrf_from_this_site_and_a_confirmation(
        sqlite_db: DB, server: WebServer) -> None:
    job = failed_row(sqlite_db)
    form = {"do": "retry-selected", "id": str(job)}
    with client(server) as c:
        token = csrf(c.get("/failed").text)
        before = snapshot(sqlite_db)
        assert c.post("/failed/action", data=form).status_code == 403
        assert c.post("/failed/action", data={**form, "csrf": "0" * 64}).status_code == 403
        other = {"origin": "http://evil.example"}
        assert c.post("/failed/action", data={**form, "csrf": token, "confirmed": "yes"},
                      headers=other).status_code == 403
        assert c.post("/failed/action", json={**form, "csrf": token}).status_code == 415
        confirm = c.post("/failed/action", data={**form, "csrf": token})
        assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
        assert snapshot(sqlite_db) == before  # asking is not doing
        done = c.post("/failed/action", data={**form, "csrf": token, "confirmed": "yes"},
                      headers={"origin": server.url})
        assert done.status_code == 303
        assert done.headers["location"] == "/failed?done=retry&n=1&left=0"
    row = sqlite_db.row(job)
    assert (row.failed_at, row.attempts, row.last_error) == (None, 0, None)


def test_a_row_a_live_worker_holds_is_left_alone(sqlite_db: DB, server: WebServer) -> None:
    """Ruby keeps locked_by on a failed row; a lock newer than the failure and younger than
    max_run_time belongs to a worker running it again (after a retry elsewhere)."""
    now = SystemClock().now().replace(microsecond=0)
    held = failed_row(sqlite_db, locked_by="delayed_job host:r pid:1", locked_at=now)
    free = failed_row(sqlite_db)
    with client(server) as c:
        token = csrf(c.get("/failed").text)
        r = c.post("/failed/action", data={"do": "delete-selected", "id": [str(held), str(free)],
                                           "csrf": token, "confirmed": "yes"})
        assert r.headers["location"] == "/failed?done=delete&n=1&left=1"
        shown = c.get(r.headers["location"]).text
        assert "1 job\n  deleted; 1 left alone" in shown
    assert sqlite_db.row(held) is not None and sqlite_db.row(free) is None


def test_all_matching_the_filter(sqlite_db: DB, server: WebServer) -> None:
    mail = [failed_row(sqlite_db, queue="mail") for _ in range(3)]
    other = failed_row(sqlite_db, queue="other")
    with client(server) as c:
        token = csrf(c.get("/failed?queue=mail").text)
        r = c.post("/failed/action", data={"do": "retry-all", "queue": "mail", "csrf": token,
                                           "confirmed": "yes"})
        assert r.headers["location"] == "/failed?queue=mail&done=retry&n=3&left=0"
    assert all(sqlite_db.row(i).failed_at is None for i in mail)
    assert sqlite_db.row(other).failed_at is not None


# -- sign-in -------------------------------------------------------------------------------------


def test_any_other_address_needs_an_auth(sqlite_db: DB) -> None:
    r = cli("web", "--database-url", sqlite_db.url, "--table-name", sqlite_db.table,
            "--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 2
    assert r.stderr.startswith("dj-consumer: error: web_host 0.0.0.0 is reachable from other "
                               "hosts: give --auth"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_token_auth(sqlite_db: DB, tmp_path: Path) -> None:
    job = failed_row(sqlite_db)
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path,
                    env={"DJ_WEB_AUTH": f"token:{TOKEN}"}) as s, client(s) as c:
        assert c.get("/").headers["location"] == "/login"
        assert c.get("/fragments/totals").status_code == 303
        assert c.get("/jobs", headers={"authorization": "Bearer nope"}).status_code == 303
        login = c.get("/login")
        assert login.status_code == 200 and "ready" not in login.text  # no counts before it
        token = csrf(login.text)
        assert c.post("/login", data={"csrf": token, "token": "wrong"}).status_code == 401
        assert c.post("/login", data={"token": TOKEN}).status_code == 403  # no CSRF field
        r = c.post("/login", data={"csrf": token, "token": TOKEN})
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 200  # the session cookie
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path,
                    "--auth", f"token:{TOKEN}") as s, client(s) as c:
        bearer = {"authorization": f"Bearer {TOKEN}"}
        page = c.get("/failed", headers=bearer)
        assert page.status_code == 200
        form = {"do": "retry-selected", "id": str(job), "confirmed": "yes"}
        assert c.post("/failed/action", data=form, headers=bearer).status_code == 403
        assert c.post("/failed/action", data={**form, "csrf": csrf(page.text)}).status_code == 401
        r = c.post("/failed/action", data={**form, "csrf": csrf(page.text)}, headers=bearer)
        assert r.status_code == 303
    assert sqlite_db.row(job).failed_at is None


def test_basic_auth_and_a_proxy_header(sqlite_db: DB, tmp_path: Path) -> None:
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path,
                    "--auth", "basic:ops:pa:ss") as s, client(s) as c:
        r = c.get("/")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        wrong = base64.b64encode(b"ops:nope").decode()
        assert c.get("/", headers={"authorization": f"Basic {wrong}"}).status_code == 401
        assert c.get("/", auth=("ops", "pa:ss")).status_code == 200
        # Any Host is fine once there is an auth (a proxy names the site).
        assert c.get("/", auth=("ops", "pa:ss"), headers={"host": "jobs.example"}).status_code == 200
    with web_server(sqlite_db.url, sqlite_db.table, tmp_path,
                    "--auth-header", "X-Forwarded-User") as s, client(s) as c:
        assert c.get("/").status_code == 401
        assert c.get("/", headers={"x-forwarded-user": "alice"}).status_code == 200


def test_a_table_gone_away_is_one_line_and_the_last_counts_stay(sqlite_db: DB,
                                                                 server: WebServer) -> None:
    fill(sqlite_db)
    with client(server) as c:
        wait_for(lambda: 'id="names"' in c.get("/fragments/overview").text, "the first pass")
        with sqlite_db.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {sqlite_db.table} RENAME TO {sqlite_db.table}_x"))
        try:
            r = c.get("/jobs")
            assert r.status_code == 503
            assert r.text.startswith(f"dj-consumer web: table '{sqlite_db.table}' does not exist")
            assert r.text.count("\n") == 1
            wait_for(lambda: 'id="pass-error"' in c.get("/fragments/overview").text,
                     "the overview to say the last pass failed", timeout=90)
            page = c.get("/fragments/overview").text
            assert "Showing the one before." in page and 'id="names"' in page
        finally:
            with sqlite_db.engine.begin() as conn:
                conn.execute(sa.text(
                    f"ALTER TABLE {sqlite_db.table}_x RENAME TO {sqlite_db.table}"))
        wait_for(lambda: 'id="pass-error"' not in c.get("/fragments/overview").text,
                 "the next pass to work again", timeout=90)


def test_overview_tells_ruby_locks_from_python_leases(sqlite_db: DB, server: WebServer) -> None:
    fill(sqlite_db)  # py host:a pid:1 locked 3 min ago; delayed_job host:r pid:9 30 s ago
    now = SystemClock().now().replace(microsecond=0)
    sqlite_db.insert(obj("NewsletterJob", n=9), locked_by="py:1 host:c pid:3",
                     locked_at=now - timedelta(minutes=6))  # past lock_timeout (5 min)
    with client(server) as c:
        wait_for(lambda: 'id="workers"' in c.get("/fragments/overview").text, "the first pass")
        page = c.get("/fragments/overview").text
    workers = re.findall(r"<tr>\s*<td><code>([^<]+)</code></td>\s*<td>(\w+)</td>.*?</tr>",
                         page.split('id="workers"')[1], re.S)
    assert workers == [("delayed_job host:r pid:9", "ruby"), ("py host:a pid:1", "python"),
                       ("py:1 host:c pid:3", "python")]
    rows = page.split('id="workers"')[1].split("</tr>")
    assert "lease 3" in rows[2] and "expired" not in rows[2]
    assert "lease 6" in rows[3] and "expired" in rows[3]
