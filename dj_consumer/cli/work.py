"""`dj-consumer work`: run the jobs that have Python handlers, beside the Ruby workers."""

from __future__ import annotations

import argparse
from typing import Any

from dj_consumer.cli._parser import EXAMPLES, add_command


def add(sub: Any) -> None:
    p = add_command(
        sub, "work", run, imports=True, help="run jobs (like Ruby's script/delayed_job run)",
        description="Reserve and run the jobs that have a Python handler. Jobs whose name has "
                    "no handler in the imported modules are never touched, so Ruby workers keep "
                    "them. SIGTERM/SIGINT: finish the job in hand, release locks, exit 0.\n\n"
                    + EXAMPLES)
    del p


def run(args: argparse.Namespace) -> int:
    from dj_consumer.cli._run import config, import_handlers, registry
    from dj_consumer.worker import Worker

    cfg = config(args)
    import_handlers(args.imports)
    worker = Worker(cfg, registry())
    try:
        worker.start()
    finally:
        worker.close()
    return 0
