"""Handlers, queue names and errors are attacker-influenced text (and so are a run record's
stage, result and error, and a schedule's expression): the dashboard shows them as text. A real Chromium opens every page that shows them and finds no element the text could
have made (a script, an img with onerror) and no script that ran — checked in the DOM, so the
test fails on a missing escape even though the CSP header would still block the script."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from dj_consumer.clock import SystemClock
from dj_consumer.runs.records import result_json
from dj_consumer.schema import add_recurring_columns
from tests.conftest import DB
from tests.integration.runs_helpers import RunsDB, job, runs_tables
from tests.webserver import WebServer, runs_web_server, wait_for

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.djXss = 'ran'</script>"
IMG = "<img src=x onerror=\"window.djXss = 'ran'\">"
HANDLER = f"--- !ruby/object:Evil{SCRIPT}\nnote: '{IMG}'\n"
QUEUE = f"q{SCRIPT}"
ERROR = f"RuntimeError: {SCRIPT}{IMG}\n/app/{IMG}.rb:1:in `perform'"


@pytest.fixture
def rdb(sqlite_db: DB) -> Iterator[RunsDB]:
    add_recurring_columns(sqlite_db.engine, sqlite_db.table)
    with runs_tables(sqlite_db) as r:
        yield r


@pytest.fixture
def server(rdb: RunsDB, tmp_path: Path) -> Iterator[WebServer]:
    with runs_web_server(rdb, tmp_path) as s:
        yield s


def assert_inert(browser: Any, where: str) -> None:
    found = browser.execute_script("""
        return {
          ran: window.djXss || null,
          scripts: Array.from(document.scripts).map(s => s.getAttribute('src')),
          handlers: document.querySelectorAll('[onerror], [onload], [onclick]').length,
          images: document.images.length,
          text: document.body.innerText,
        };""")
    assert found["ran"] is None, where
    assert found["scripts"] == ["/static/htmx.min.js"], where
    assert (found["handlers"], found["images"]) == (0, 0), where
    assert SCRIPT in found["text"], f"{where}: the text is not shown as text"


def test_table_text_never_becomes_markup(browser: Any, rdb: RunsDB, server: WebServer) -> None:
    from selenium.webdriver.common.by import By

    sqlite_db = rdb.db
    hour_ago = SystemClock().now().replace(microsecond=0) - timedelta(hours=1)
    failed = sqlite_db.insert(HANDLER, queue=QUEUE, failed_at=hour_ago, attempts=2,
                              last_error=ERROR)
    waiting = sqlite_db.insert(HANDLER, queue=QUEUE, run_at=hour_ago)  # "nobody runs this"
    with sqlite_db.engine.begin() as conn:  # a schedule and a run record from the same text
        conn.execute(sa.text(f"UPDATE {sqlite_db.table} SET cron = :c WHERE id = :id"),
                     {"c": f"0 6 * * * {SCRIPT}", "id": failed})
        rdb.store.start(conn, job(waiting, name=f"Evil{SCRIPT}", queue=QUEUE), hour_ago)
        rdb.store.progress(conn, waiting, 1, 3, stage=IMG, now=hour_ago)
        rdb.store.start(conn, job(failed), hour_ago)
        rdb.store.finish(conn, failed, "failed", attempts=2, now=hour_ago, error=ERROR,
                         result=result_json({"html": f"{SCRIPT}{IMG}"}))
    for path in [f"/jobs/{failed}", f"/jobs/{waiting}", "/jobs",
                 "/failed", "/jobs?q=%3Cscript%3E"]:
        browser.get(server.url + path)
        assert_inert(browser, path)
    browser.get(server.url + "/")  # the counts arrive in a fragment htmx swaps in
    wait_for(lambda: browser.find_elements(By.ID, "stuck"), "the nobody-runs-this list")
    assert_inert(browser, "overview")
    browser.get(server.url + "/recurring")  # the list arrives with a status pass
    wait_for(lambda: browser.find_elements(By.ID, "schedules"), "the list of schedules")
    assert_inert(browser, "recurring")
    browser.get(server.url + f"/jobs/{waiting}")
    assert IMG in browser.find_element(By.ID, "progress-stage").text
    browser.get(server.url + f"/jobs/{failed}")
    assert IMG in browser.find_element(By.ID, "last-error").text
    assert IMG in browser.find_element(By.ID, "handler").text
    assert SCRIPT in browser.find_element(By.ID, "run-result").text
    assert SCRIPT in browser.find_element(By.ID, "schedule").text
    # The filter goes back into hidden fields of the confirmation form: still text.
    browser.get(server.url + "/failed?queue=" + quote(QUEUE, safe=""))
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]")
    assert [r.get_attribute("data-id") for r in rows] == [str(failed)]
    browser.find_element(By.CSS_SELECTOR, "button[value=delete-all]").click()
    wait_for(lambda: browser.find_elements(By.ID, "confirm"), "the confirmation page")
    assert_inert(browser, "confirmation")
    assert browser.find_element(By.CSS_SELECTOR, "input[name=queue]").get_attribute("value") \
        == QUEUE
