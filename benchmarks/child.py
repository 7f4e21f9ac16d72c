"""One measured worker process: `python -m benchmarks.child MODE JSON-ARGS` prints a JSON result.

Modes: bare, dj (work_off or start), latency (the contention scenario), memory. dj_consumer logs as in production
(`--log-format json`), written to /dev/null, so log formatting is part of what is measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa


def rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB, from /proc."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def _quiet_json_logs() -> None:
    from dj_consumer.cli import configure_logging

    saved = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    try:
        configure_logging("json")
    finally:
        sys.stderr = saved


def _worker(args: dict[str, Any], **overrides: Any) -> Any:
    import benchmarks.jobs  # noqa: F401 - registers NoopJob and SleepJob
    from dj_consumer import make_worker

    _quiet_json_logs()
    config: dict[str, Any] = {"database_url": args["url"], "table_name": args["table"],
                              "worker_id": args.get("worker_id", "bench"), "sleep_delay": 0.0}
    config.update(args.get("config", {}))
    config.update(overrides)
    return make_worker(config)


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def _time_reserves(worker: Any) -> list[float]:
    """Wrap worker.store.reserve (what the worker calls) to time each reserve (seconds)."""
    samples: list[float] = []
    reserve: Callable[..., Any] = worker.store.reserve

    def timed(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return reserve(*a, **kw)
        finally:
            samples.append(time.perf_counter() - started)

    worker.store.reserve = timed
    return samples


def mode_bare(args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks import bare

    cpu = time.process_time()
    jobs, seconds = bare.run(args["url"], args["table"], args["jobs"])
    return {"jobs": jobs, "seconds": seconds, "cpu": time.process_time() - cpu}


def mode_dj(args: dict[str, Any]) -> dict[str, Any]:
    """dj_consumer at the given config: work_off(N) in this thread, or start() with slots."""
    if args.get("start"):
        worker = _worker(args, exit_on_complete=True)
        worker.work_off(0)  # connect and check the table before the clock starts
        before = _count(args["url"], args["table"])
        cpu = time.process_time()
        started = time.perf_counter()
        worker.start()
        seconds = time.perf_counter() - started
        jobs = before - _count(args["url"], args["table"])
    else:
        worker = _worker(args)
        worker.work_off(0)  # connect and check the table before the clock starts
        counted = _count_statements(worker) if args.get("count") else None
        cpu = time.process_time()
        started = time.perf_counter()
        succeeded, _failed = worker.work_off(args["jobs"])
        seconds = time.perf_counter() - started
        jobs = succeeded
    cpu = time.process_time() - cpu
    worker.close()
    result = {"jobs": jobs, "seconds": seconds, "cpu": cpu, "rss_kb": rss_kb()[0]}
    if args.get("count"):
        result.update(counted or {})
    return result


def _count_statements(worker: Any) -> dict[str, int]:
    """Round trips the worker sends, counted at the driver (a multi-statement script is one;
    a COMMIT is one): PyMySQL's query/commit, psycopg's execute/commit. SQLite: not counted."""
    counts = {"statements": 0, "commits": 0}

    def counting(owner: Any, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def wrapped(*a: Any, **kw: Any) -> Any:
            counts[key] += 1
            return inner(*a, **kw)

        setattr(owner, name, wrapped)

    dialect = worker.store.dialect
    if dialect == "mysql":
        import pymysql.connections

        counting(pymysql.connections.Connection, "query", "statements")
        counting(pymysql.connections.Connection, "commit", "commits")
    elif dialect == "postgresql":
        import psycopg

        counting(psycopg.Cursor, "execute", "statements")
        counting(psycopg.Connection, "commit", "commits")
    else:
        counts["statements"] = counts["commits"] = -1
    return counts

def mode_latency(args: dict[str, Any]) -> dict[str, Any]:
    """One of several competing workers: every reserve timed; starts at a shared wall time."""
    worker = _worker(args, worker_id=f"lat{args['index']}")
    worker.work_off(0)
    samples = _time_reserves(worker)
    time.sleep(max(0.0, args["start_at"] - time.time()))
    started = time.perf_counter()
    succeeded, _failed = worker.work_off(args["jobs"])
    seconds = time.perf_counter() - started
    worker.close()
    return {"jobs": succeeded, "seconds": seconds, "reserve_s": samples}


def mode_reserve(args: dict[str, Any]) -> dict[str, Any]:
    """Time `jobs` reserves of one worker (the backlog scenario)."""
    worker = _worker(args)
    worker.work_off(0)
    samples = _time_reserves(worker)
    succeeded, _failed = worker.work_off(args["jobs"])
    worker.close()
    return {"jobs": succeeded, "reserve_s": samples}


def mode_memory(args: dict[str, Any]) -> dict[str, Any]:
    """RSS after each checkpoint (jobs done so far), working off in chunks."""
    import gc

    worker = _worker(args)
    worker.work_off(0)
    points: list[dict[str, Any]] = [{"jobs": 0, "rss_kb": rss_kb()[0]}]
    done = 0
    started = time.perf_counter()
    for checkpoint in args["checkpoints"]:
        while done < checkpoint:
            succeeded, failed = worker.work_off(min(1000, checkpoint - done))
            if succeeded + failed == 0:
                break
            done += succeeded + failed
        rss, hwm = rss_kb()
        points.append({"jobs": done, "rss_kb": rss, "hwm_kb": hwm, "objects": len(gc.get_objects()),
                       "seconds": time.perf_counter() - started})
    worker.close()
    return {"points": points}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "bare": mode_bare,
    "dj": mode_dj,
    "latency": mode_latency,
    "reserve": mode_reserve,
    "memory": mode_memory,
}


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    result = MODES[mode](json.loads(raw))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
