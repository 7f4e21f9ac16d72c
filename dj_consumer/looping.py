"""A daemon thread that runs `_loop` until stopped: the prober's and the listener's shape."""

from __future__ import annotations

import threading


class Looping:
    """Subclasses set `thread_name` and write `_loop`, which returns once `_stop` is set."""

    thread_name = "dj-loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end and wait for it (5 s at most: a stuck query is left behind)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _loop(self) -> None:
        raise NotImplementedError
