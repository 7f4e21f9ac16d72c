"""`dj-consumer`: work, status, jobs, failed, why, check, parse, enqueue, schema, web.

One small module per command group (work, status, rows, tools, handlers); _parser builds the
arguments from Config's declarations, _run runs a command and turns every mistake into one
line, _logs is the only place that configures logging. Heavy imports (SQLAlchemy, structlog,
the worker) happen inside the command that needs them, so `dj-consumer --help` and
`dj-consumer parse FILE` start in a fraction of a second.
"""

from __future__ import annotations

import logging
import sys

from dj_consumer.cli._parser import build_parser
from dj_consumer.cli._run import main

__all__ = ["build_parser", "configure_logging", "main"]


def configure_logging(fmt: str = "console", level: int = logging.INFO) -> None:
    """Logging as `dj-consumer` sets it up (for embedding and the benchmarks)."""
    from dj_consumer.cli import _logs

    _logs.configure(fmt, level)


if __name__ == "__main__":
    sys.exit(main())
