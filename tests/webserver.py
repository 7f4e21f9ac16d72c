"""`dj-consumer web` as a user runs it: a subprocess on 127.0.0.1 and a free port, for the
HTTP tests and the browser tests."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import clean_env
from tests.integration.runs_helpers import RunsDB

#: Handlers the dashboard under test imports: these names count as Python's.
WEBJOBS = Path(__file__).resolve().parent / "webjobs.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def web_server(database_url: str, table: str, log_dir: Path, *extra: str,
               imports: Sequence[Path] = (WEBJOBS,), env: dict[str, str] | None = None,
               host: str = "127.0.0.1") -> Iterator[WebServer]:
    """`dj-consumer web` on a free port until the block ends (SIGTERM, then SIGKILL)."""
    port = free_port()
    args = [sys.executable, "-m", "dj_consumer.cli", "web", "--database-url", database_url,
            "--table-name", table, "--host", host, "--port", str(port), *extra]
    for module in imports:
        args += ["--import", str(module)]
    log = log_dir / f"web-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                env={**clean_env(), **(env or {})})
    server = WebServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_listening(server, port)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def runs_web_server(rdb: RunsDB, log_dir: Path) -> Iterator[WebServer]:
    """`dj-consumer web` on a test's table and its run-record tables (runs_helpers)."""
    with web_server(rdb.db.url, rdb.db.table, log_dir, "--runs-table", rdb.runs,
                    "--batches-table", rdb.batches) as s:
        yield s


def _wait_listening(server: WebServer, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"dj-consumer web exited {server.proc.returncode}:\n{server.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    pytest.fail(f"dj-consumer web did not listen within {timeout:.0f}s:\n{server.output()}")


def wait_for(condition: object, what: str, timeout: float = 60, every: float = 0.2) -> None:
    """Poll `condition()` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
