"""Drain N jobs with rubydj-pyworker's own Worker (get_job + handle_job, as its run() loop
does), then print one JSON line: {"jobs", "failed", "seconds", "cpu", "error"}.

Run by the interpreter of the bench's private venv (.bench/venv-pyworker), never by the
project's: it imports pyworker and nothing of ours.

    python -I pyworker_driver.py postgresql://user@host:port/db RECEIVER N

pyworker names its table `delayed_jobs` in its SQL; the bench points it at the table under
test with PGOPTIONS (a search_path holding a view of that name).
"""

import json
import sys
import time

from pyworker.job import Job
from pyworker.worker import Worker


class QuietLogger:
    """pyworker logs two INFO lines per job; the other workers in the table log nothing."""

    def __init__(self):
        self.first_error = None

    def debug(self, message):
        pass

    info = warning = debug

    def error(self, message):
        if self.first_error is None:
            self.first_error = str(message).strip().splitlines()[-1]


def main():
    url, receiver, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    done = [0]

    def run(self):
        pass  # the receiver's noop method; pyworker dispatches on the class alone

    def success(self):
        done[0] += 1

    # pyworker looks the receiver's class up by its Ruby name among Job subclasses.
    type(receiver, (Job,), {"run": run, "success": success})
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


if __name__ == "__main__":
    main()
