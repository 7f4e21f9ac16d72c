"""`dj-consumer web`: the dashboard (the `[web]` extra: Starlette, Jinja2, uvicorn)."""

from __future__ import annotations

import argparse
from typing import Any

from dj_consumer.cli._parser import add_command
from dj_consumer.errors import ConfigError


def add(sub: Any) -> None:
    add_command(
        sub, "web", run, imports=True,
        help="a web dashboard: status per queue and name, jobs and their run records, failed "
             "rows to retry or delete, recurring schedules",
        description="Serve the dashboard (docs/web.md 'Web dashboard'). It listens on 127.0.0.1 "
                    "unless --host names another address, which needs --auth (or "
                    "--auth-header behind a proxy that signs users in). Pass the --import "
                    "modules and flags your workers use: they decide which names count as "
                    "Python's and what 'why' says. It never locks or runs a job; retry and "
                    "delete leave rows a live worker holds alone.")


def run(args: argparse.Namespace) -> int:
    from dj_consumer.cli._run import config, import_handlers, registry

    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"dj-consumer web needs the web extra ({exc.name} is missing): "
                          "pip install 'dj_consumer[web]'") from None
    from dj_consumer import web

    cfg = config(args)
    import_handlers(args.imports)
    web.serve(cfg, registry())
    return 0
