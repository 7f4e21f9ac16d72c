"""`dj-consumer work`: run the jobs that have Python handlers, beside the Ruby workers."""

from __future__ import annotations

import argparse
import os
from typing import Any

from dj_consumer.cli._parser import EXAMPLES, add_command


def add(sub: Any) -> None:
    p = add_command(
        sub, "work", run, imports=True, help="run jobs (like Ruby's script/delayed_job run)",
        description="Reserve and run the jobs that have a Python handler. Jobs whose name has "
                    "no handler in the imported modules are never touched, so Ruby workers keep "
                    "them. SIGTERM/SIGINT: finish the job in hand, release locks, exit 0.\n\n"
                    + EXAMPLES)
    # A supervisor's child (dj_consumer.supervisor): its index and its health file.
    p.add_argument("--child-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-health", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from dj_consumer.cli._run import config, import_handlers, registry

    cfg = config(args)
    if args.child_index is None and cfg.process_count > 1:
        from dj_consumer.supervisor import Supervisor

        import_handlers(args.imports)  # a mistake is one line here, not P restarting children
        return Supervisor(cfg, _work_argv(args.argv)).run()
    from pathlib import Path

    from dj_consumer import child, metrics

    health_file = None
    if args.child_index is not None:
        cfg = child.child_config(cfg, args.child_index)
        health_file = Path(args.child_health) if args.child_health else None
    import_handlers(args.imports)
    multiproc = args.child_index is not None and metrics.MULTIPROC_ENV in os.environ
    return child.run_worker(cfg, registry(), health_file=health_file, multiproc_metrics=multiproc)


def _work_argv(argv: list[str]) -> list[str]:
    """`work …` from the full command line (global flags before `work` are none but --version)."""
    return argv[argv.index("work"):] if "work" in argv else ["work", *argv]
