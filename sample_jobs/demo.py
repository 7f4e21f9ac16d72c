"""`make demo`: a fresh SQLite delayed_jobs table, the sample jobs, one worker run, a summary."""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa

from dj_consumer import cli, schema
from sample_jobs.enqueue import enqueue_all

DB_FILE = "demo.db"
URL = f"sqlite:///{DB_FILE}"
HANDLERS_FILE = "sample_jobs/__init__.py"


def main() -> int:
    if os.path.exists(DB_FILE):
        os.remove(DB_FILE)
    engine = sa.create_engine(URL)
    schema.create(engine)
    engine.dispose()
    print(f"== created {DB_FILE} with Rails' delayed_jobs schema")
    ids = enqueue_all(URL)
    print(f"== enqueued {len(ids)} jobs in Rails' YAML (one is Ruby-only)\n")
    cli.main(["jobs", "--database-url", URL])
    print("\n== dj-consumer work --import sample_jobs --exit-on-complete\n", flush=True)
    code = cli.main(["work", "--database-url", URL, "--import", "sample_jobs",
                     "--exit-on-complete", "--sleep-delay", "0.2", "--worker-id", "demo"])
    if code != 0:
        return code
    engine = sa.create_engine(URL)
    t = schema.delayed_jobs_table()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.attempts, t.c.failed_at, t.c.handler)).all()
    engine.dispose()
    left = {r.id for r in rows}
    failed = [r for r in rows if r.failed_at is not None]
    rescheduled = [r for r in rows if r.failed_at is None and r.attempts > 0]
    untouched = [r for r in rows if r.failed_at is None and r.attempts == 0]
    print("\n== what happened")
    print(f"  succeeded:   {len([i for i in ids if i not in left])} (rows deleted)")
    print(f"  rescheduled: {len(rescheduled)} (attempts + 1, run_at = now + attempts**4 + 5 s)")
    print(f"  failed:      {len(failed)} (failed_at set, kept for inspection)")
    print(f"  untouched:   {len(untouched)} (no Python handler: left for Ruby workers)\n")
    cli.main(["jobs", "--database-url", URL])
    print(f"\nInspect it yourself: DJ_DATABASE_URL={URL} .venv/bin/dj-consumer jobs")
    left_for_ruby = untouched[0].id if untouched else ids[-1]
    print(f"next: write your own handler ({HANDLERS_FILE} shows how) / try "
          f"`DJ_DATABASE_URL={URL} .venv/bin/dj-consumer why {left_for_ruby} --import sample_jobs`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
