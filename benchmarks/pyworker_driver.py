"""rubydj-pyworker's own Worker under the benchmarks. Run by the interpreter of the bench's
private venv (.bench/venv-pyworker), never by the project's: it imports pyworker and nothing
of ours (hence `-I`: this directory's operator.py would shadow the standard library's).

    python -I pyworker_driver.py drain URL RECEIVER N
        get_job + handle_job until N jobs ran or none is ready (as its run() loop does), then
        one JSON line: {"jobs", "failed", "seconds", "cpu", "error"}
    python -I pyworker_driver.py pickup URL RECEIVER STAMPS
        Worker.run() at its defaults until SIGTERM, stamping as benchmarks/pickup_child.py
        does: "ready T" once, "SEQ T" when a job starts (SEQ = the row's id - 1: the latency
        scenario inserts into a fresh table), "q STATEMENTS CPU T" every 0.5 s

pyworker names its table `delayed_jobs` in its SQL; the bench points it at the table under
test with PGOPTIONS (a search_path holding a view of that name).
"""

import json
import sys
import threading
import time

import psycopg2
import psycopg2.extensions
import pyworker.db
from pyworker.job import Job
from pyworker.worker import Worker


class QuietLogger:
    """pyworker logs two INFO lines per job; the other workers under test log nothing."""

    def __init__(self):
        self.first_error = None

    def debug(self, message):
        pass

    info = warning = debug

    def error(self, message):
        if self.first_error is None:
            self.first_error = str(message).strip().splitlines()[-1]


def receiver_class(name, run, success=None):
    """pyworker looks the receiver's class up by its Ruby name among its Job subclasses and
    calls run(); it does not look at the method name."""
    body = {"run": run}
    if success is not None:
        body["success"] = success
    return type(name, (Job,), body)


def drain(url, receiver, count):
    done = [0]

    def success(self):
        done[0] += 1

    receiver_class(receiver, lambda self: None, success)
    logger = QuietLogger()
    worker = Worker(url, logger=logger)
    worker.sleep_delay = 0
    worker._cursor = worker.database.connect().cursor()
    cpu = time.process_time()
    started = time.perf_counter()
    seen = 0
    while seen < count:
        job = worker.get_job()
        if job is None:
            break
        worker.handle_job(job)
        seen += 1
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    worker.database.disconnect()
    print(json.dumps({"jobs": done[0], "failed": seen - done[0], "seconds": seconds, "cpu": cpu,
                      "error": logger.first_error}))


def pickup(url, receiver, stamps):
    out = open(stamps, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()
    sent = [0]

    def stamp(line):
        with lock:
            out.write(line + "\n")

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            sent[0] += 1
            return super().execute(query, vars)

    def connect(*args, **kwargs):
        return psycopg2.connect(*args, cursor_factory=CountingCursor, **kwargs)

    pyworker.db.psycopg2 = type("counted_psycopg2", (), {"connect": staticmethod(connect)})
    receiver_class(receiver, lambda self: stamp(f"{self.job_id - 1} {time.time()}"))
    worker = Worker(url, logger=QuietLogger())  # its defaults: sleep_delay 10 s

    def timeline():
        while True:
            stamp(f"q {sent[0]} {time.process_time()} {time.time()}")
            time.sleep(0.5)

    threading.Thread(target=timeline, daemon=True).start()
    stamp(f"ready {time.time()}")
    worker.run()  # until SIGTERM


def main():
    mode, url, receiver, arg = sys.argv[1:5]
    if mode == "drain":
        drain(url, receiver, int(arg))
    else:
        pickup(url, receiver, arg)


if __name__ == "__main__":
    main()
