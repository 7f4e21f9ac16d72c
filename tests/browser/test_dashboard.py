"""The dashboard in a real Chromium, against a MariaDB table that real Ruby filled (struct,
ActiveJob and `.delay` enqueues, and a job a Ruby worker failed) and our `enqueue`: the
overview's counts and sides, counts that change without a reload, and a failed job retried
from its page until it leaves the failed list."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from dj_consumer import enqueue
from dj_consumer.clock import SystemClock
from tests.interop.conftest import Interop, make_interop
from tests.webserver import WebServer, wait_for, web_server

pytestmark = [pytest.mark.browser, pytest.mark.ruby]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    tmp = tmp_path_factory.mktemp("web")
    for shared in make_interop("mariadb", tmp):
        shared.ruby.enqueue([
            {"kind": "struct", "class": "RubyOnlyJob", "args": {"key": "r-%{i}"}, "count": 3,
             "queue": "ruby"},
            {"kind": "active_job", "class": "RubyActiveJob", "args": ["aj-%{i}"], "count": 2},
            {"kind": "delay_class", "class": "RubyMailer", "method": "deliver",
             "args": ["m-%{i}"], "count": 1},
            {"kind": "struct", "class": "OneShotJob", "args": {"key": "one", "message": "no luck"},
             "queue": "oneshot"},
        ])
        shared.ruby.work(queues=["oneshot"])  # a real Ruby worker fails OneShotJob for good
        later = SystemClock().now() + timedelta(hours=1)
        for i in range(4):
            enqueue(py_config(shared), "PyReportJob", {"n": i}, queue="python")
        enqueue(py_config(shared), "NoopJob", [1], shape="active_job", queue="python",
                run_at=later)
        yield shared


def py_config(shared: Interop) -> dict[str, Any]:
    return {"database_url": shared.url, "table_name": shared.table}


@pytest.fixture(scope="module")
def server(table: Interop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with web_server(table.url, table.table, tmp_path_factory.mktemp("weblog")) as s:
        yield s


def overview(browser: Any) -> dict[tuple[str, str], dict[str, str]]:
    """The overview's table: (queue, name) → column → text, as the browser shows it. Read in
    one script: htmx may swap the table between two WebDriver calls."""
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('#names tbody tr[data-name]'))
          .map(tr => Array.from(tr.cells).map(td => td.innerText.trim()));""")
    keys = ["queue", "name", "runs in", "ready", "oldest", "scheduled", "running", "failed"]
    out = {}
    for cells in rows:
        row = dict(zip(keys, cells, strict=True))
        out[(row["queue"], row["name"])] = row
    return out


def text_of(browser: Any, element_id: str) -> str:
    return str(browser.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
        element_id))


def test_overview_counts_what_ruby_and_python_enqueued(browser: Any, server: WebServer) -> None:
    browser.get(server.url + "/")
    wait_for(lambda: overview(browser), "the first status pass on the overview")
    lines = overview(browser)
    want = {
        ("ruby", "RubyOnlyJob"): ("ruby only", "3", "0", "0"),
        ("ruby", "RubyActiveJob"): ("ruby only", "2", "0", "0"),
        ("nil", "RubyMailer.deliver"): ("ruby only", "1", "0", "0"),
        ("oneshot", "OneShotJob"): ("ruby only", "0", "0", "1"),
        ("python", "PyReportJob"): ("python", "4", "0", "0"),
        ("python", "NoopJob"): ("python", "0", "1", "0"),
    }
    got = {key: (line["runs in"], line["ready"], line["scheduled"], line["failed"])
           for key, line in lines.items()}
    assert got == want
    assert "no live locks" in text_of(browser, "overview").lower()


def test_counts_change_without_a_reload(browser: Any, server: WebServer, table: Interop) -> None:
    browser.get(server.url + "/")
    wait_for(lambda: overview(browser), "the first status pass on the overview")
    browser.execute_script("window.djMarker = 'same page'")  # a reload would drop it
    for i in range(2):
        enqueue(py_config(table), "PyReportJob", {"n": 10 + i}, queue="python")
    wait_for(lambda: overview(browser).get(("python", "PyReportJob"), {}).get("ready") == "6",
             "the ready count of PyReportJob to become 6 without a reload", timeout=90)
    assert browser.execute_script("return window.djMarker") == "same page"
    wait_for(lambda: "12 ready" in text_of(browser, "totals"),
             "the header totals to say 12 ready", timeout=90)


def test_retry_a_failed_job_from_its_page(browser: Any, server: WebServer,
                                          table: Interop) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/failed")
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]")
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == ["OneShotJob"]
    job_id = rows[0].get_attribute("data-id")
    rows[0].find_element(By.LINK_TEXT, job_id).click()
    wait_for(lambda: text_of(browser, "state") == "failed", f"job {job_id}'s page")
    error = browser.find_element("id", "last-error").text
    assert error.startswith("no luck") and "jobs.rb" in error  # Ruby's message and backtrace
    assert '"key": "one"' in browser.find_element("id", "payload").text
    browser.find_element("id", "retry").click()
    wait_for(lambda: "Retry 1 failed job?" in text_of(browser, "main"), "the confirmation")
    browser.find_element("id", "confirm").click()
    wait_for(lambda: "1 job will run again" in " ".join(text_of(browser, "done").split()),
             "the job page saying the job will run again")
    assert text_of(browser, "state") == "ready"
    browser.get(server.url + "/failed")
    assert browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]") == []
    row = table.db.row(int(job_id))
    assert (row.failed_at, row.attempts, row.last_error, row.locked_by) == (None, 0, None, None)
