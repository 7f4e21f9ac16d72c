"""Where one worker's time goes: cProfile of work_off(N) and the database round trips per job.

    python -m benchmarks.profile [--backend mariadb] [--jobs 2000] [--top 10] [--sort cumulative]
    python -m benchmarks.profile --split [--backend mariadb]   # CPU per job by part, no profiler;
                                                               # on MySQL also the reserve's wall-clock phases

Round trips are counted at the driver (PyMySQL commands sent, psycopg queries executed), so
pool pings, BEGIN/COMMIT and rollback-on-return show up alongside the protocol's statements.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from benchmarks import env
from benchmarks.child import _worker


def count_round_trips(backend: str) -> Counter[str]:
    """Patch the driver so every command sent to the server is counted by its first word."""
    counts: Counter[str] = Counter()
    if backend == "mariadb":
        import pymysql.connections as conn_mod

        original: Callable[..., Any] = conn_mod.Connection._execute_command

        def counted(self: Any, command: int, sql: Any) -> Any:
            if command == 3:  # COM_QUERY
                text = sql.decode() if isinstance(sql, bytes) else str(sql)
                counts[text.split(None, 1)[0].upper() if text.strip() else "?"] += 1
            else:
                counts[{14: "COM_PING", 1: "COM_QUIT", 2: "COM_INIT_DB"}.get(command, f"cmd{command}")] += 1
            return original(self, command, sql)

        conn_mod.Connection._execute_command = counted
    elif backend == "postgresql":
        import psycopg

        execute: Callable[..., Any] = psycopg.Cursor.execute

        def counted_pg(self: Any, query: Any, *a: Any, **kw: Any) -> Any:
            text = query if isinstance(query, str) else str(getattr(query, "as_string", lambda _c: query)(self))
            counts[text.split(None, 1)[0].upper() if text.strip() else "?"] += 1
            return execute(self, query, *a, **kw)

        psycopg.Cursor.execute = counted_pg  # type: ignore[method-assign]
        pg_conn: Any = psycopg.Connection
        for name in ("commit", "rollback"):
            method: Callable[..., Any] = getattr(pg_conn, name)

            def wrapped(self: Any, *a: Any, _m: Callable[..., Any] = method, _n: str = name,
                        **kw: Any) -> Any:
                counts[_n.upper()] += 1
                return _m(self, *a, **kw)

            setattr(pg_conn, name, wrapped)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="mariadb", choices=env.BACKENDS)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    p.add_argument("--by-package", action="store_true",
                   help="also sum own time (tottime) per package: where the CPU goes")
    p.add_argument("--split", action="store_true",
                   help="instead of cProfile: this thread's CPU per job in each part of the loop "
                        "(cProfile inflates call-heavy code; thread_time does not count waits)")
    args = p.parse_args(argv)
    t = env.target(args.backend)
    if args.split:
        return cpu_split(t, args.jobs)
    counts = count_round_trips(args.backend)
    with env.Table(t, "prof") as table:
        table.insert(env.NOOP_HANDLER, args.jobs)
        worker = _worker({"url": t.url, "table": table.name})
        worker.work_off(0)
        counts.clear()
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        done, _failed = worker.work_off(args.jobs)
        profiler.disable()
        seconds = time.perf_counter() - started
        worker.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(f"{args.backend}: {done} jobs in {seconds:.2f} s under cProfile ({done / seconds:,.0f} jobs/s)")
    print(f"round trips per job: {sum(counts.values()) / max(done, 1):.2f}")
    for what, n in counts.most_common():
        print(f"  {what:<12} {n / max(done, 1):.2f}")
    print(out.getvalue())
    if args.by_package:
        print("own time per package (ms per job):")
        for package, seconds_ in by_package(stats).most_common(12):
            print(f"  {package:<28} {1000 * seconds_ / max(done, 1):.3f}")
    return 0


def cpu_split(t: env.Target, jobs: int) -> int:
    """Main-thread CPU per job (time.thread_time) in each part of work_off, without a profiler."""
    import dj_consumer.slots as slots_mod

    spent: Counter[str] = Counter()

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*a: Any, **kw: Any) -> Any:
            started = time.thread_time()
            try:
                return original(*a, **kw)
            finally:
                spent[label] += time.thread_time() - started

        setattr(owner, name, wrapper)

    phases: list[tuple[float, float, float, float]] = []

    def phased(db: Any) -> None:
        """Wall clock around each one-round-trip reserve (MySQL): sent → row arrived →
        client work done (on_rows) → server's reply complete (its COMMIT)."""
        original = db.run_script

        def wrapper(*a: Any, on_rows: Any = None, **kw: Any) -> Any:
            marks = [time.perf_counter()]

            def timed_rows(result: Any) -> None:
                marks.append(time.perf_counter())
                on_rows(result)
                marks.append(time.perf_counter())

            out = original(*a, on_rows=timed_rows if on_rows else None, **kw)
            if len(marks) == 3:
                phases.append((marks[0], marks[1], marks[2], time.perf_counter()))
            return out

        db.run_script = wrapper

    with env.Table(t, "split") as table:
        table.insert(env.NOOP_HANDLER, jobs)
        worker = _worker({"url": t.url, "table": table.name})
        worker.work_off(0)
        phased(worker.store.db)
        timed(worker.store, "reserve", "reserve (all of it)")
        timed(worker.store.db, "run", "  driver: run")
        timed(worker.store.db, "run_script", "  driver: run_script")
        timed(slots_mod, "_parse", "  handler parse")
        timed(worker.slots, "_job", "build Job (+ log.bind)")
        timed(worker.executor, "execute", "execute (hooks, watchdog, handler)")
        timed(worker.recorder, "settle", "outcome log line")
        started = time.thread_time()
        done, _failed = worker.work_off(jobs)
        total = time.thread_time() - started
        worker.close()
    print(f"{t.backend}: main-thread CPU {1e6 * total / max(done, 1):.0f} us per job ({done} jobs)")
    for label, seconds in spent.items():
        print(f"  {label:<36} {1e6 * seconds / max(done, 1):7.1f} us")
    if phases:
        def median_us(values: list[float]) -> float:
            return 1e6 * sorted(values)[len(values) // 2]

        gaps = [b[0] - a[3] for a, b in pairwise(phases)]
        print("one-round-trip reserve, wall clock (medians): on MySQL the handler parse and the "
              "previous job's log line run inside run_script, while the server commits")
        print(f"  sent -> row arrived                  {median_us([p[1] - p[0] for p in phases]):7.1f} us")
        print(f"  client work meanwhile (parse, log)   {median_us([p[2] - p[1] for p in phases]):7.1f} us")
        print(f"  then until the reply is complete     {median_us([p[3] - p[2] for p in phases]):7.1f} us")
        print(f"  client gap to the next reserve       {median_us(gaps):7.1f} us")
    return 0


def by_package(stats: pstats.Stats) -> Counter[str]:
    """tottime summed by top-level package (socket waits and lock waits kept apart)."""
    totals: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if filename == "~":
            key = "builtin " + ("socket I/O" if ("recv" in func or "send" in func) else
                                "lock waits" if ("acquire" in func or "release" in func) else func)
        elif "site-packages/" in filename:
            key = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/work/main/" in filename:
            key = "/".join(filename.split("/work/main/", 1)[1].split("/")[:2])
        else:
            key = "stdlib " + filename.rsplit("/", 1)[-1]
        totals[key] += tottime
    return totals


if __name__ == "__main__":
    raise SystemExit(main())
