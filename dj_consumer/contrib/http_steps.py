"""A ready-made handler for multi-step HTTP jobs (the queue-service pattern), with httpx.

    from dj_consumer import job
    from dj_consumer.contrib import http_steps
    http_steps.register(job, "HttpSteps", max_attempts=8, secret_keys=("x-signature",))

The payload holds `steps`, run in order: `{"name", "method", "url", "headers", "body" (a
dict/list is sent as JSON, a string as it is), "expect" (a status or a list; default any
2xx), "retry_exponent" (default 4), "timeout" (seconds, default 30)}`. Each finished step is
saved to the run record's checkpoint and reported as progress (stage = the step's name); a
failed step fails the attempt, which is retried after attempt ** retry_exponent seconds and
resumes at that step (finished steps are not sent again); the job fails for good after
max_attempts (the registration's, or the payload's own `max_attempts`). The return value (the
run's result) is each step's name and status.

Credentials never reach logs, last_error or the run record: messages name a step by its
method and its URL without userinfo, with secret query values masked; every value of a
secret header (Authorization, Cookie, X-Api-Key …), query parameter or body key (password,
token, secret …, and `secret_keys`) and of URL userinfo is masked wherever it would appear.
Needs the `http` extra: pip install 'dj_consumer[http]'.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dj_consumer.errors import DJConsumerError, FailJob
from dj_consumer.models import Job
from dj_consumer.registry import Registry
from dj_consumer.runs import reporting
from dj_consumer.runs.reporting import RunReporter

#: Header, query and body keys whose values are credentials (compared without case, `-`/`_`).
SECRET_KEYS = frozenset({
    "authorization", "proxyauthorization", "cookie", "setcookie", "xapikey", "apikey",
    "xauthtoken", "authtoken", "token", "accesstoken", "refreshtoken", "idtoken", "secret",
    "clientsecret", "password", "passwd", "signature", "sig", "privatekey", "key", "session",
    "sessionid", "xcsrftoken", "csrftoken",
})
MASK = "[REDACTED]"
DEFAULT_RETRY_EXPONENT = 4.0
DEFAULT_TIMEOUT = 30.0
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class StepFailed(DJConsumerError):
    """An HTTP step failed; the attempt is retried from that step."""


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    url: str
    headers: dict[str, str]
    body: Any
    expect: tuple[int, ...]  # () means any 2xx
    retry_exponent: float
    timeout: float

    def accepts(self, status: int) -> bool:
        return status in self.expect if self.expect else 200 <= status < 300


class Redactor:
    """Masks every credential a payload holds, wherever it would be written."""

    def __init__(self, steps: Iterable[Mapping[str, Any]], secret_keys: Iterable[str]) -> None:
        self.keys = SECRET_KEYS | {_norm(k) for k in secret_keys}
        self.values: set[str] = set()
        for step in steps:
            self._collect(step.get("headers"))
            self._collect(step.get("body"))
            url = str(step.get("url") or "")
            parts = urlsplit(url)
            for part in (parts.username, parts.password):
                if part:
                    self.values.update((part, unquote(part)))
            self._collect(dict(parse_qsl(parts.query)))
        self.values = {v for v in self.values if len(v) >= 3}  # "1" must not mask every 1

    def secret(self, key: Any) -> bool:
        return _norm(str(key)) in self.keys

    def _collect(self, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if self.secret(key) and item is not None:
                    text = str(item)
                    self.values.add(text)
                    # "Bearer abc": the token alone may be echoed too
                    self.values.update(w for w in text.split() if len(w) >= 8)
                else:
                    self._collect(item)
        elif isinstance(value, list):
            for item in value:
                self._collect(item)

    def url(self, url: str) -> str:
        """The URL without userinfo, secret query values masked."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        query = urlencode([(k, MASK if self.secret(k) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="[]")
        return self.text(urlunsplit((parts.scheme, netloc, parts.path, query, "")))

    def text(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


def register(registry: Registry, name: str = "HttpSteps", *,
             max_attempts: int | None = None, secret_keys: Iterable[str] = (),
             queue: str | None = None,
             reporter_for: Callable[[Job], RunReporter] | None = None,
             client_factory: Callable[[], Any] | None = None) -> None:
    """Register the HTTP steps handler under `name` in `registry` (e.g. dj_consumer.job).
    `reporter_for(job)` gives the run record's reporter (default: the worker's, see
    runs.reporting); `client_factory()` an httpx.Client (default: a plain one)."""
    keys = tuple(secret_keys)
    exponent = threading.local()

    def reschedule_at(now: datetime, attempts: int) -> datetime:
        # The executor asks right after the failed attempt, on the attempt's own thread.
        power = getattr(exponent, "value", DEFAULT_RETRY_EXPONENT)
        return now + timedelta(seconds=float(attempts) ** power)

    def run(j: Job) -> dict[str, Any]:
        exponent.value = DEFAULT_RETRY_EXPONENT
        reporter = reporter_for(j) if reporter_for is not None else reporting.current()
        return run_steps(j, reporter, secret_keys=keys, client_factory=client_factory,
                         on_retry=lambda power: setattr(exponent, "value", power))

    registry.run(name, max_attempts=max_attempts, reschedule_at=reschedule_at, queue=queue)(run)


def run_steps(j: Job, reporter: RunReporter, *, secret_keys: Iterable[str] = (),
              client_factory: Callable[[], Any] | None = None,
              on_retry: Callable[[float], None] = lambda _: None) -> dict[str, Any]:
    """One attempt: the steps not finished by an earlier attempt, in order."""
    raw = _raw_steps(j.payload)
    redactor = Redactor(raw, [*secret_keys, *_payload_keys(j.payload)])
    try:
        steps = [_step(s, i, redactor) for i, s in enumerate(raw)]
    except (TypeError, ValueError, AttributeError) as exc:
        raise FailJob(redactor.text(f"http_steps: a step is malformed: {exc}")) from None
    if len({s.name for s in steps}) != len(steps):
        raise FailJob("http_steps: step names must be unique")
    saved = reporter.checkpoint()
    done: dict[str, int] = dict(saved.get("done", {})) if isinstance(saved, Mapping) else {}
    client = client_factory() if client_factory is not None else _client()
    try:
        for step in steps:
            if step.name in done:
                continue
            if j.timed_out.is_set():
                raise StepFailed(f"step {step.name}: the job timed out before it was sent")
            status, error = _send(client, step, redactor)
            if error is None:
                done[step.name] = status or 0
                reporter.save_checkpoint({"done": done})
                reporter.progress(len(done), len(steps), step.name)
                j.log.info("http_steps.step", step=step.name, status=status,
                           url=redactor.url(step.url))
                continue
            reporter.save_checkpoint({"done": done, "failed": {"step": step.name,
                                                                "status": status, "error": error}})
            reporter.progress(len(done), len(steps), step.name)
            j.log.warning("http_steps.step_failed", step=step.name, status=status, error=error)
            on_retry(step.retry_exponent)
            limit = _payload_max_attempts(j.payload)
            if limit is not None and j.attempts + 1 >= limit:
                raise FailJob(f"{error} (attempt {j.attempts + 1} of {limit}: giving up)")
            raise StepFailed(error)
    finally:
        client.close()
    return {"steps": [{"name": s.name, "status": done[s.name]} for s in steps]}


def _send(client: Any, step: Step, redactor: Redactor) -> tuple[int | None, str | None]:
    """(status, None) when the step is done, else (status or None, a redacted message)."""
    where = f"step {step.name}: {step.method} {redactor.url(step.url)}"
    kwargs: dict[str, Any] = {"headers": step.headers, "timeout": step.timeout}
    if isinstance(step.body, dict | list):
        kwargs["json"] = step.body
    elif step.body is not None:
        kwargs["content"] = str(step.body)
    try:
        response = client.request(step.method, step.url, **kwargs)
    except Exception as exc:  # httpx.HTTPError, or a header httpx cannot encode …
        # The exception's text may echo a credential (httpx quotes an illegal header value
        # whole): its kind, and its message masked; never its traceback (raised from None).
        return None, redactor.text(f"{where} failed: {type(exc).__name__}: {exc}")
    if step.accepts(response.status_code):
        return response.status_code, None
    want = "/".join(map(str, step.expect)) if step.expect else "2xx"
    return response.status_code, f"{where} returned {response.status_code}, expected {want}"


def _client() -> Any:
    try:
        import httpx
    except ImportError:
        raise FailJob("http_steps needs httpx: pip install 'dj_consumer[http]'") from None
    return httpx.Client(follow_redirects=False)


def _raw_steps(payload: Any) -> list[Mapping[str, Any]]:
    steps = payload.get("steps") if isinstance(payload, Mapping) else None
    if not isinstance(steps, list) or not steps or \
            not all(isinstance(s, Mapping) for s in steps):
        raise FailJob("http_steps: the payload needs 'steps', a non-empty list of steps")
    return steps


def _step(raw: Mapping[str, Any], index: int, redactor: Redactor) -> Step:
    name = str(raw.get("name") or f"step{index + 1}")
    method = str(raw.get("method") or "GET").upper()
    url = raw.get("url")
    if method not in METHODS or not isinstance(url, str) or \
            not url.startswith(("http://", "https://")):
        raise FailJob(f"http_steps: step {name} needs a method ({', '.join(METHODS)}) and an "
                      f"http(s) url, got {method} {redactor.url(str(url))}")
    expect = raw.get("expect")
    codes = () if expect is None else tuple(int(c) for c in (
        expect if isinstance(expect, list) else [expect]))
    headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
    return Step(name, method, url, headers, raw.get("body"), codes,
                float(raw.get("retry_exponent", DEFAULT_RETRY_EXPONENT)),
                float(raw.get("timeout", DEFAULT_TIMEOUT)))


def _payload_keys(payload: Any) -> list[str]:
    keys = payload.get("secret_keys") if isinstance(payload, Mapping) else None
    return [str(k) for k in keys] if isinstance(keys, list) else []


def _payload_max_attempts(payload: Any) -> int | None:
    value = payload.get("max_attempts") if isinstance(payload, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")
