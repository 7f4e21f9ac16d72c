"""The Python side of the latency scenario (benchmarks/pickup.py): an idle worker at the
default settings, `start()` until SIGTERM, its StampJob handler stamping when it starts.

    python -m benchmarks.pickup_child JSON-ARGS

Writes to args["stamps"], one line each: "ready T" once; "SEQ T" per handler start; every
0.5 s "q STATEMENTS CPU T" (statements sent to the database so far, this process's CPU time).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from dj_consumer import Job, Registry


class Counter:
    """Statements sent to the database: every driver execute (a MySQL multi-statement script
    is one round trip, counted once)."""

    def __init__(self) -> None:
        self.n = 0

    def install(self) -> None:
        import psycopg
        import pymysql
        import sqlalchemy as sa

        counter = self

        def wrap(cls: Any, name: str) -> None:
            real = getattr(cls, name)

            def counted(*a: Any, **kw: Any) -> Any:
                counter.n += 1
                return real(*a, **kw)
            setattr(cls, name, counted)

        wrap(psycopg.Cursor, "execute")
        wrap(pymysql.connections.Connection, "query")

        @sa.event.listens_for(sa.Engine, "connect")
        def _trace(dbapi_conn: Any, _: Any) -> None:
            if hasattr(dbapi_conn, "set_trace_callback"):  # sqlite3
                dbapi_conn.set_trace_callback(lambda _sql: counter.__setattr__("n", counter.n + 1))


def main() -> None:
    from benchmarks.child import _quiet_json_logs
    from dj_consumer import make_worker

    args: dict[str, Any] = json.loads(sys.argv[1])
    out = open(args["stamps"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()

    def stamp(line: str) -> None:
        with lock:
            out.write(line + "\n")

    registry = Registry()

    @registry.run("StampJob")
    def stamp_job(j: Job) -> None:
        stamp(f"{j.payload['seq']} {time.time()}")

    counter = Counter()
    counter.install()
    _quiet_json_logs()
    config: dict[str, Any] = {"database_url": args["url"], "table_name": args["table"],
                              "worker_id": "pickup"}
    config.update(args.get("config", {}))
    worker = make_worker(config, registry)

    def timeline() -> None:
        while True:
            stamp(f"q {counter.n} {time.process_time()} {time.time()}")
            time.sleep(0.5)

    threading.Thread(target=timeline, daemon=True).start()
    worker.work_off(0)  # connect and check the table first
    stamp(f"ready {time.time()}")
    worker.start()  # until SIGTERM
    worker.close()


if __name__ == "__main__":
    main()
