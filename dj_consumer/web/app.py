"""The dashboard's routes. Pages read through dj_consumer.admin, each bounded: a listing is
admin_scan (a few primary-key windows), a job is one primary-key read (and one more each for
its run record and its schedule, web/records), and the counts and the list of schedules come
from the background status pass (snapshot). The only writes are admin's fenced retry and
delete of failed rows, behind a POST with a CSRF token and a confirmation page. Nothing here
locks a row or runs a job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from dj_consumer import __version__
from dj_consumer.admin import STATES, Admin, Filter, Row, horizon
from dj_consumer.admin_scan import scan
from dj_consumer.clock import Clock
from dj_consumer.config import Config
from dj_consumer.registry import Registry
from dj_consumer.web.records import Records
from dj_consumer.web.security import SESSION_COOKIE, SESSION_SECONDS, Guard
from dj_consumer.web.snapshot import RULE, STUCK_AFTER, Snapshots, nobody_runs
from dj_consumer.web.templating import environment, link
from dj_consumer.web.views import first_line, job_page, run_poll, state_of

log = structlog.get_logger(__name__)

PAGE = 50
MAX_FORM_BYTES = 512 * 1024
ACTIONS = ("retry", "delete")
SCOPES = ("selected", "all")
#: Longest filter values taken from a request (a queue is a varchar(255)).
MAX_FILTER = 255


class Web:
    """The handlers, with what they read from: one Admin, the status passes, the guard."""

    def __init__(self, cfg: Config, registry: Registry, admin: Admin, snaps: Snapshots,
                 guard: Guard, clock: Clock, records: Records) -> None:
        self.cfg, self.registry, self.admin, self.records = cfg, registry, admin, records
        self.snaps, self.guard, self.clock = snaps, guard, clock
        self.env = environment()

    # -- pages ------------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        return self._render(request, "overview.html", **self._overview())

    def overview_fragment(self, request: Request) -> Response:
        return self._render(request, "_overview.html", **self._overview())

    def totals_fragment(self, request: Request) -> Response:
        return self._render(request, "_totals.html")

    def jobs(self, request: Request) -> Response:
        return self._listing(request, failed=False)

    def failed(self, request: Request) -> Response:
        return self._listing(request, failed=True)

    def job(self, request: Request) -> Response:
        job_id = int(request.path_params["id"])
        row = self.admin.get(job_id)
        run = self._run(job_id, row)
        if row is None:  # a final run record outlives its row: show it
            return self._render(request, "missing.html", 404, **run)
        now, hz = self._now()
        page = job_page(row, self.cfg, self.registry, now, hz, run=run["run"],
                        schedule=self.records.schedule(job_id))
        return self._render(request, "job.html", job=page, done=_done(request), **run)

    def run_fragment(self, request: Request) -> Response:
        """A job's run record, polled by its page while it can change (views.run_poll)."""
        job_id = int(request.path_params["id"])
        return self._render(request, "_run.html", **self._run(job_id, self.admin.get(job_id)))

    def recurring(self, request: Request) -> Response:
        return self._render(request, "recurring.html", **self._recurring())

    def recurring_fragment(self, request: Request) -> Response:
        return self._render(request, "_recurring.html", **self._recurring())

    def login_form(self, request: Request) -> Response:
        return self._render(request, "login.html", error=None)

    # -- what changes state: POST, CSRF-checked, confirmed ----------------------------------

    async def action(self, request: Request) -> Response:
        form = await self._form(request)
        verb, _, scope = _one(form, "do").partition("-")
        if verb not in ACTIONS or scope not in SCOPES:
            raise HTTPException(400, "do must be retry-selected, retry-all, delete-selected "
                                     "or delete-all")
        f = _filter(lambda k: _one(form, k), failed=True)
        ids = _ids(form.get("id", []))
        job = _one(form, "job")
        if scope == "selected" and not ids:
            raise HTTPException(400, "no row selected")
        if _one(form, "confirmed") != "yes":
            snap = self.snaps.latest()
            count = len(ids) if scope == "selected" else (
                snap.count(f) if snap is not None and not f.text else None)
            return self._render(request, "confirm.html", verb=verb, scope=scope, f=f,
                                ids=ids, count=count, job=job)
        done, asked = await run_in_threadpool(self._apply, verb, scope, f, ids)
        log.info("web.retried" if verb == "retry" else "web.deleted", scope=scope, asked=asked,
                 done=done, by=request.state.identity or None)
        back = f"/jobs/{int(job)}" if job.isdigit() else link("/failed", **_params(f))
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}done={verb}&n={done}&left={asked - done}", 303)

    def _apply(self, verb: str, scope: str, f: Filter, ids: list[int]) -> tuple[int, int]:
        now, hz = self._now()
        if scope == "all":
            ids = self.admin.ids(f, now, hz)
        if not ids:
            return 0, 0
        done = self.admin.retry(ids, now, hz) if verb == "retry" else self.admin.delete(ids, hz)
        return done, len(ids)

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        cookie = self.guard.login(_one(form, "token"))
        if cookie is None:
            await asyncio.sleep(0.5)  # a guess costs time
            log.warning("web.login_refused", client=request.client.host if request.client else None)
            return self._render(request, "login.html", 401, error="wrong token")
        response = RedirectResponse("/", 303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        await self._form(request)
        response = RedirectResponse("/login" if self.guard.kind == "token" else "/", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- helpers ----------------------------------------------------------------------------

    def _listing(self, request: Request, *, failed: bool) -> Response:
        f = _filter(lambda k: request.query_params.get(k, ""), failed=failed)
        before = _int(request.query_params.get("before"), "before")
        now, hz = self._now()
        page = scan(self.admin, f, now, hz, before=before, limit=PAGE)
        snap = self.snaps.latest()
        total = snap.count(f) if snap is not None and not f.text else None
        rows = [(r, name, state_of(r, now, hz), first_line(r.last_error))
                for r, name in zip(page.rows, page.names, strict=True)]
        return self._render(request, "jobs.html", f=f, params=_params(f), rows=rows,
                            page=page, total=total, failed=failed, before=before,
                            done=_done(request), states=STATES)

    def _run(self, job_id: int, row: Row | None) -> dict[str, Any]:
        """What templates/_run.html shows of a job's run record."""
        run = self.records.run(job_id)
        has_runs = self.records.has_runs()
        return {"job_id": job_id, "run": run, "poll": run_poll(row, run, has_runs),
                "has_runs": has_runs, "runs_table": self.cfg.runs_table,
                "runs_problem": self.records.problem, "now": self.clock.now()}

    def _recurring(self) -> dict[str, Any]:
        if not self.records.has_recurring():
            return {"supported": False, "rows": None, "now": self.clock.now()}
        self.snaps.want_schedules()
        snap = self.snaps.latest()
        return {"supported": True, "rows": snap.schedules if snap is not None else None,
                "now": self.clock.now(), "pass_error": self.snaps.error}

    def _overview(self) -> dict[str, Any]:
        snap = self.snaps.latest()
        python = set(self.registry.names())
        stuck = nobody_runs(snap, python) if snap is not None else []
        minutes = int(STUCK_AFTER.total_seconds() // 60)
        return {"python": python, "stuck": stuck,
                "stuck_keys": {(s.queue, s.name) for s in stuck},
                "rule": RULE.format(minutes=minutes), "minutes": minutes,
                "cfg": self.cfg, "now": self.clock.now(), "pass_error": self.snaps.error}

    def _render(self, request: Request, template: str, status: int = 200,
                **context: Any) -> Response:
        identity = request.state.identity
        snap = self.snaps.latest()
        html = self.env.get_template(template).render(
            table=self.cfg.table_name, dialect=self.admin.dialect, version=__version__,
            csrf=self.guard.csrf_token(identity or ""), identity=identity, auth=self.guard.kind,
            snap=snap, totals=snap.totals() if snap else None, **{"done": None, **context})
        return HTMLResponse(html, status_code=status)

    def _now(self) -> tuple[datetime, datetime]:
        now = self.clock.now()
        return now, horizon(now, self.cfg.max_run_time)

    async def _form(self, request: Request) -> dict[str, list[str]]:
        """The urlencoded form of a POST, once its CSRF token and origin check out."""
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            raise HTTPException(415, "a form post is expected")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise HTTPException(413, "form too large")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        why = self.guard.may_change(request, request.state.identity or "", _one(form, "csrf"))
        if why is not None:
            log.warning("web.post_refused", path=request.url.path, reason=why)
            raise HTTPException(403, why)
        return form


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key) or [""]
    return values[0]


def _filter(get: Callable[[str], str], *, failed: bool) -> Filter:
    values = {k: get(k).strip()[:MAX_FILTER] or None for k in ("state", "queue", "name", "q")}
    state = "failed" if failed else values["state"] or "all"
    if state not in STATES:
        raise HTTPException(400, f"state must be one of {', '.join(STATES)}")
    return Filter(name=values["name"], queue=values["queue"], state=state, text=values["q"])


def _params(f: Filter) -> dict[str, str | None]:
    return {"state": None if f.state in ("all", "failed") else f.state, "queue": f.queue,
            "name": f.name, "q": f.text}


def _ids(values: list[str]) -> list[int]:
    return list(dict.fromkeys(_int(v, "id") or 0 for v in values[:10_000] if v))


def _int(text: str | None, what: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 19:
        raise HTTPException(400, f"{what} must be a row id")
    return int(text)


def _done(request: Request) -> dict[str, int | str] | None:
    verb = request.query_params.get("done")
    if verb not in ACTIONS:
        return None
    return {"verb": verb or "", "n": _int(request.query_params.get("n"), "n") or 0,
            "left": _int(request.query_params.get("left"), "left") or 0}


def database_error(request: Request, exc: Exception) -> Response:
    """A database error as one line, 503: the page works again when the database does."""
    from dj_consumer.dberrors import describe

    log.warning("web.database_error", path=request.url.path, error=describe(exc))
    return PlainTextResponse(f"dj-consumer web: {describe(exc)}\n", 503)


def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", exc.status_code,
                             headers=exc.headers)


ERRORS = {SQLAlchemyError: database_error, HTTPException: http_error}
