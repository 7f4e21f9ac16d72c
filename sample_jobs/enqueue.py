"""Enqueue the sample jobs with handlers exactly as Rails' Psych writes them.

    python -m sample_jobs.enqueue sqlite:///demo.db
"""

from __future__ import annotations

import sys

from dj_consumer.clock import SystemClock
from dj_consumer.config import Config
from dj_consumer.store import Store

# Verbatim Psych output (Ruby 3.1, delayed_job 4.1.9, ActiveJob 6.1).
HANDLERS = [
    ("default", "--- !ruby/struct:NewsletterJob\nlist_id: 7\nsubject: November news\n"),
    ("default", "--- !ruby/object:Delayed::PerformableMethod\nobject: !ruby/object:User\n"
                "  id: 12\n  email: ada@example.com\nmethod_name: :send_welcome\nargs:\n- en\n"),
    ("default", "--- !ruby/object:ActiveJob::QueueAdapters::DelayedJobAdapter::JobWrapper\n"
                "job_data:\n  job_class: ReportJob\n  job_id: 78b23612-8fb7-4318-b80d-3105a5851155\n"
                "  provider_job_id:\n  queue_name: default\n  priority:\n  arguments:\n"
                "  - monthly\n  - year: 2026\n    format:\n"
                "      _aj_serialized: ActiveJob::Serializers::SymbolSerializer\n"
                "      value: pdf\n    _aj_symbol_keys:\n    - year\n  executions: 0\n"
                "  exception_executions: {}\n  locale: en\n  timezone:\n"
                "  enqueued_at: '2026-11-23T16:19:30Z'\n"),
    ("default", "--- !ruby/object:FlakyJob\ncharge_id: 991\n"),
    ("default", "--- !ruby/object:DoomedJob\naccount_id: 5\n"),
    ("slow", "--- !ruby/object:SlowJob\nsteps: 30\n"),
    # A job only the Ruby workers can run: dj_consumer never touches it.
    ("default", "--- !ruby/object:RubyOnlyJob\nnote: left for the Ruby workers\n"),
]


def enqueue_all(database_url: str, table_name: str = "delayed_jobs") -> list[int]:
    store = Store(Config(database_url=database_url, table_name=table_name))
    try:
        store.check()
        now = SystemClock().now()
        return [store.insert(handler, now=now, queue=queue) for queue, handler in HANDLERS]
    finally:
        store.close()


if __name__ == "__main__":
    ids = enqueue_all(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///demo.db")
    print(f"enqueued {len(ids)} jobs: ids {ids[0]}..{ids[-1]}")
