"""`dj-consumer work --processes P`: P worker processes under one supervisor.

Each child is a fresh interpreter (spawned, never forked: no connection, lock or thread is
shared) running the same command line as child k (dj_consumer.child). The supervisor:
- restarts a child that dies, after a backoff (1 s, doubling up to 30 s; back to 1 s once a
  child has lived a minute), with one log line each time;
- does not restart a child that exits with FATAL_EXIT (2: its database refuses it for good,
  or its config is wrong): it stops the others and exits 2 itself;
- forwards SIGTERM/SIGINT: the first asks every child to finish its jobs and release its
  locks, the second interrupts them (as for one process);
- exits 0 only when every child exited 0;
- with metrics_port, serves one /metrics (the sum of all children, prometheus-client's
  multiprocess mode in PROMETHEUS_MULTIPROC_DIR, emptied at start), /healthz and /readyz.
Its signal handlers only set a flag; everything happens in its loop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

from dj_consumer import health, metrics
from dj_consumer.config import Config

log = structlog.get_logger(__name__)

__all__ = ["FATAL_EXIT", "Supervisor"]

#: A child's exit status that means "restarting cannot help" (dj-consumer's error exit).
FATAL_EXIT = 2
BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
#: A child that lived this long starts the backoff over.
STEADY = 60.0
TURN = 0.1


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: float = BACKOFF_MIN
    exit_code: int | None = None  # its last exit status, once it exited for good
    restarts: int = field(default=0)


class Supervisor:
    def __init__(self, cfg: Config, argv: Sequence[str]) -> None:
        self.cfg = cfg
        self.argv = list(argv)  # `work …` as the supervisor was started
        self.children = [Child(k) for k in range(cfg.process_count)]
        self.signals: list[int] = []
        self.stopping = False
        self.fatal: str | None = None
        self.last_turn = time.time()
        self.state_dir = Path(tempfile.mkdtemp(prefix="dj-consumer-"))
        self.multiproc: Path | None = None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        server = self._serve() if self.cfg.metrics_port is not None else None
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("supervisor.started", processes=len(self.children),
                 concurrency=self.cfg.concurrency, worker_id=self.cfg.worker_id)
        try:
            for child in self.children:
                self._spawn(child)
            while any(c.proc is not None or c.restart_at is not None for c in self.children):
                self.last_turn = time.time()
                self._handle_signals()
                for child in self.children:
                    self._check(child)
                time.sleep(TURN)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in self.children:  # only if the loop itself failed
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()
            if server is not None:
                server.close()
            shutil.rmtree(self.state_dir, ignore_errors=True)
        codes = [c.exit_code for c in self.children]
        status = FATAL_EXIT if self.fatal else 0 if all(c == 0 for c in codes) else 1
        log.info("supervisor.stopped", exit_codes=codes, status=status)
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if self.stopping:
                log.warning("supervisor.interrupting", signal=name,
                            hint="the children unlock their jobs with attempts unchanged")
            else:
                log.info("supervisor.stopping", signal=name,
                         hint="the children finish their jobs; send again to interrupt them")
            self._stop_all(signum)

    def _stop_all(self, signum: int) -> None:
        self.stopping = True
        for child in self.children:
            child.restart_at = None
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.proc is None:
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restart_at = None
                child.restarts += 1
                self._spawn(child)
            return
        code = child.proc.poll()
        if code is None:
            return
        pid, lived = child.proc.pid, now - child.started
        child.proc = None
        if self.multiproc is not None:
            metrics.process_dead(pid)
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            # Our signal reached it before its worker had taken over signals (it was still
            # starting: no job had run, no row was locked), or after its worker had stopped.
            code = 0
        if code == 0 or self.stopping:
            child.exit_code = code
            log.info("supervisor.child_exited", child=child.index, pid=pid, exit_code=code)
            return
        if code == FATAL_EXIT:
            child.exit_code = code
            self.fatal = f"child {child.index} exited {code}"
            log.error("supervisor.child_fatal", child=child.index, pid=pid, exit_code=code,
                      hint="its database refuses it for good or its config is wrong: not "
                           "restarted; stopping the other children")
            self._stop_all(signal.SIGTERM)
            return
        if lived >= STEADY:
            child.backoff = BACKOFF_MIN
        child.restart_at = now + child.backoff
        log.error("supervisor.child_died", child=child.index, pid=pid, exit_code=code,
                  lived_s=round(lived, 1), restart_in_s=child.backoff,
                  hint="restarting it; its jobs come back after lock_timeout")
        child.backoff = min(child.backoff * 2, BACKOFF_MAX)

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "dj_consumer.cli", *self.argv,
               "--child-index", str(child.index),
               "--child-health", str(self.health_file(child.index))]
        env = dict(os.environ)
        if self.multiproc is not None:
            env[metrics.MULTIPROC_ENV] = str(self.multiproc)
        # Its own session: a terminal's Ctrl-C reaches the supervisor only, which forwards
        # it once (twice would interrupt the jobs at once).
        child.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        child.started = time.monotonic()
        log.info("supervisor.child_started", child=child.index, pid=child.proc.pid,
                 worker_id=f"{self.cfg.worker_id}.{child.index}", restarts=child.restarts)

    def health_file(self, index: int) -> Path:
        return self.state_dir / f"health.{index}.json"

    # -- the port --------------------------------------------------------------------------

    def _serve(self) -> health.Server:
        body = None
        try:
            metrics.require()
            self.multiproc = self._multiproc_dir()
            body = lambda: metrics.exposition(None)  # noqa: E731
        except Exception as exc:
            log.warning("metrics.off", error=str(exc), hint="/healthz and /readyz are served")
        port = self.cfg.metrics_port
        assert port is not None
        return health.Server(self.cfg.metrics_host, port, live=self.live, ready=self.ready,
                             metrics=body).start()

    def _multiproc_dir(self) -> Path:
        """PROMETHEUS_MULTIPROC_DIR as given (emptied of an earlier run's files), else ours."""
        given = os.environ.get(metrics.MULTIPROC_ENV)
        if not given:
            path = self.state_dir / "metrics"
            path.mkdir()
        else:
            path = Path(given)
            path.mkdir(parents=True, exist_ok=True)
            for old in path.glob("*.db"):
                old.unlink()
        os.environ[metrics.MULTIPROC_ENV] = str(path)  # for exposition() in this process
        return path

    def live(self) -> health.State:
        ago = time.time() - self.last_turn
        if ago > health.LIVE_WINDOW:
            return False, f"the supervisor loop last turned {ago:.1f}s ago"
        return True, "ok"

    def ready(self) -> health.State:
        if self.stopping:
            return False, "shutting down"
        now, lines, ok = time.time(), [], True
        for child in self.children:
            if child.proc is None:
                state: health.State = (False, "not running (restarting)")
            else:
                live, state = health.read_published(self.health_file(child.index), now)
                if not live[0]:
                    state = live
            ok = ok and state[0]
            lines.append(f"child {child.index}: {state[1]}")
        return ok, "\n".join(["ok" if ok else "not ready", *lines])
