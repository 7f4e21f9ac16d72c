"""/healthz, /readyz and /metrics on metrics_port (plain text, 200 or 503).

/healthz (live): the worker's watch loop turned within LIVE_WINDOW seconds.
/readyz (ready): not shutting down, and the last reserve reached the database within
3 x sleep_delay (at least READY_MIN seconds), or every slot is busy with a job since a
reserve that did. Under a supervisor each child writes its state to a file once a second
(`Health.publish`) and the supervisor's endpoints answer for all of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from dj_consumer.events import Observer, Poll
from dj_consumer.models import Job

log = structlog.get_logger(__name__)

__all__ = ["Health", "Server", "State"]

#: The watch loop turns every 0.1 s; live means it turned within this many seconds.
LIVE_WINDOW = 10.0
#: The readiness window is 3 x sleep_delay, but never shorter than this (a loaded host).
READY_MIN = 1.0

State = tuple[bool, str]  # (ok, one line saying why)


class Health(Observer):
    """A worker's liveness and readiness, from what it tells its observer."""

    def __init__(self, sleep_delay: float, slots: int, *, publish_to: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.window = max(3 * sleep_delay, READY_MIN)
        self.slots = slots
        self.clock = clock
        self.publish_to = publish_to
        self.last_tick: float | None = None
        self.last_poll: float | None = None  # the last reserve that reached the database
        self.poll_error: str | None = None  # the last reserve failed: why
        self.in_flight = 0
        self.shutting_down = False
        self._published = 0.0
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.last_tick = now = self.clock()
        if self.publish_to is not None and now - self._published >= 1.0:
            self._published = now
            self.publish(self.publish_to)

    def polled(self, kind: Poll, seconds: float, exc: BaseException | None = None) -> None:
        if kind is Poll.ERROR:
            first = (str(exc).splitlines() or [""])[0]
            self.poll_error = f"{type(exc).__name__}: {first[:200]}"
        else:
            self.last_poll, self.poll_error = self.clock(), None

    def started(self, job: Job) -> None:
        with self._lock:
            self.in_flight += 1

    def ran(self, job: Job, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1

    def stopping(self) -> None:
        self.shutting_down = True
        if self.publish_to is not None:
            self.publish(self.publish_to)

    def live(self) -> State:
        if self.last_tick is None:
            return False, "not started"
        ago = self.clock() - self.last_tick
        if ago > LIVE_WINDOW:
            return False, f"the worker loop last turned {ago:.1f}s ago"
        return True, "ok"

    def ready(self) -> State:
        if self.shutting_down:
            return False, "shutting down"
        if self.poll_error is not None:
            return False, f"the last reserve failed: {self.poll_error}"
        if self.last_poll is None:
            return False, "no reserve has reached the database yet"
        ago = self.clock() - self.last_poll
        if ago <= self.window:
            return True, "ok"
        if self.in_flight >= self.slots:
            return True, "ok (every slot is running a job)"
        return False, f"the last reserve reached the database {ago:.1f}s ago (> {self.window:g}s)"

    def publish(self, path: Path) -> None:
        """Write live/ready for a supervisor to read (atomically; best effort)."""
        live, ready = self.live(), self.ready()
        data = {"at": self.clock(), "live": live, "ready": ready}
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("health.unwritten", path=str(path), error=str(exc))


def read_published(path: Path, now: float) -> tuple[State, State]:
    """A child's (live, ready) from its file; a file older than LIVE_WINDOW is not live."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return (False, "no health file yet"), (False, "no health file yet")
    ago = now - float(data["at"])
    if ago > LIVE_WINDOW:
        stale = (False, f"its health file was written {ago:.1f}s ago")
        return stale, stale
    live, ready = data["live"], data["ready"]
    return (bool(live[0]), str(live[1])), (bool(ready[0]), str(ready[1]))


Probe = Callable[[], State]


class Server:
    """The metrics port: /metrics (when `metrics` is given), /healthz, /readyz."""

    def __init__(self, host: str, port: int, *, live: Probe, ready: Probe,
                 metrics: Callable[[], tuple[bytes, str]] | None) -> None:
        probes = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics" and metrics is not None:
                        body, ctype = metrics()
                        self._send(200, body, ctype)
                    elif path in probes:
                        ok, why = probes[path]()
                        self._send(200 if ok else 503, (why + "\n").encode())
                    else:
                        self._send(404, b"not found: /metrics /healthz /readyz\n")
                except Exception as exc:  # a probe's bug: say so, keep serving
                    log.error("health.error", path=path, error=f"{type(exc).__name__}: {exc}")
                    self._send(500, f"{type(exc).__name__}: {exc}\n".encode())

            def _send(self, status: int, body: bytes,
                      ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dj-metrics",
                                        daemon=True)

    def start(self) -> Server:
        self._thread.start()
        log.info("metrics.listening", port=self.port,
                 paths=["/healthz", "/readyz"] + (["/metrics"] if True else []))
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
