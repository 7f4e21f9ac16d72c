"""`dj-consumer web`: a dashboard for the shared delayed_jobs table (the `[web]` extra).

Starlette routes (app), Jinja2 templates with autoescape (templating, templates/), htmx
polling fragments for the live counts (static/htmx.min.js, vendored: nothing is fetched at
run time), the background status passes (snapshot), and the sign-in and CSRF rules
(security). `create_app` builds the ASGI app; `serve` runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from dj_consumer.clock import Clock
    from dj_consumer.config import Config
    from dj_consumer.registry import Registry

__all__ = ["create_app", "serve"]


def create_app(cfg: Config, registry: Registry, *, clock: Clock | None = None,
               every: float = 5.0) -> Starlette:
    """The dashboard for `cfg`'s table; the names `registry` holds count as Python's. Checks
    the table and the auth rules now (one ConfigError line when wrong)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from dj_consumer.admin import Admin
    from dj_consumer.clock import SystemClock
    from dj_consumer.store import Store
    from dj_consumer.web.app import ERRORS, Web
    from dj_consumer.web.records import Records
    from dj_consumer.web.security import Guard, GuardMiddleware
    from dj_consumer.web.snapshot import Snapshots

    guard = Guard.from_config(cfg)
    # The pool's size follows `concurrency`: room for the status pass's four id ranges at
    # once, beside the pages being served.
    store = Store(cfg.replace(concurrency=4))
    try:
        store.check()
    except BaseException:
        store.close()
        raise
    clock = clock or SystemClock()
    records = Records(store, cfg)
    snaps = Snapshots(Admin(store), cfg, clock.now, every=every,
                      read_schedules=records.schedules)
    web = Web(cfg, registry, Admin(store), snaps, guard, clock, records)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        snaps.start()
        try:
            yield
        finally:
            snaps.stop()
            store.close()

    routes = [
        Route("/", web.overview),
        Route("/fragments/overview", web.overview_fragment),
        Route("/fragments/totals", web.totals_fragment),
        Route("/jobs", web.jobs),
        Route("/jobs/{id:int}", web.job),
        Route("/jobs/{id:int}/run", web.run_fragment),
        Route("/failed", web.failed),
        Route("/failed/action", web.action, methods=["POST"]),
        Route("/recurring", web.recurring),
        Route("/fragments/recurring", web.recurring_fragment),
        Route("/login", web.login_form),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", StaticFiles(packages=[("dj_consumer.web", "static")]), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=ERRORS,
                     middleware=[Middleware(GuardMiddleware, guard=guard)])


def serve(cfg: Config, registry: Registry, *, ready: socket.socket | None = None) -> None:
    """Run the dashboard until SIGINT/SIGTERM (uvicorn; logging stays as configured)."""
    import structlog
    import uvicorn

    app = create_app(cfg, registry)
    sock = ready or bind(cfg.web_host, cfg.web_port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    structlog.get_logger(__name__).info(
        "web.started", url=f"http://{shown}:{port}/", table=cfg.table_name,
        auth=(cfg.web_auth or "").partition(":")[0] or ("header" if cfg.web_auth_header else None))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           server_header=False, lifespan="on"))
    server.run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one; the log line names it)."""
    from dj_consumer.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # a kept-alive connection waits 40 ms (Nagle and delayed ACKs) for every answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
