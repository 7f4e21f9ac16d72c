"""Who may use the dashboard, and which requests may change anything.

- Loopback only, unless an auth is configured: `web_host` other than 127.0.0.1 / ::1 /
  localhost without `web_auth` or `web_auth_header` stops `dj-consumer web` at start. Without
  an auth, a request must also name a loopback Host: a web page cannot reach the dashboard
  through a DNS name it rebinds to 127.0.0.1.
- `token:SECRET`: `Authorization: Bearer SECRET`, or a session cookie from the login form.
  `basic:USER:PASSWORD`: HTTP Basic. `web_auth_header`: the proxy's header must be there.
- A state change is a POST whose form carries a CSRF token (an HMAC of the signed-in identity
  under a key made at start) and whose Origin, when the browser sends one, is this site.
- Every answer forbids framing, sniffing, caching, and any script or style not served here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dj_consumer.config import Config
from dj_consumer.errors import ConfigError

SESSION_COOKIE = "dj_session"
SESSION_SECONDS = 12 * 3600
#: Paths anyone may fetch: the login form and the static files it needs.
OPEN_PATHS = ("/login", "/static/")
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Guard:
    """The auth of one dashboard process (see the module docstring)."""

    kind: str | None  # None, "token", "basic" or "header"
    secret: str = ""  # the token, or "user:password"
    header: str | None = None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_config(cls, cfg: Config) -> Guard:
        if cfg.web_auth is not None:
            kind, _, secret = cfg.web_auth.partition(":")
            return cls(kind, secret)
        if cfg.web_auth_header is not None:
            return cls("header", header=cfg.web_auth_header)
        if not is_loopback(cfg.web_host):
            raise ConfigError(f"web_host {cfg.web_host} is reachable from other hosts: give "
                              "--auth token:SECRET or --auth basic:USER:PASSWORD (DJ_WEB_AUTH), "
                              "or --auth-header for a reverse proxy that signs users in")
        return cls(None)

    # -- identity ---------------------------------------------------------------------------

    def identity(self, conn: HTTPConnection) -> str | None:
        """Who is asking ("" without an auth), or None when they may not."""
        if self.kind is None:
            return ""
        if self.kind == "header":
            assert self.header is not None
            return conn.headers.get(self.header) or None
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if self.kind == "basic":
            if scheme.lower() != "basic":
                return None
            try:
                given = base64.b64decode(value, validate=True).decode("utf-8")
            except ValueError:
                return None
            return given.partition(":")[0] if _same(given, self.secret) else None
        if scheme.lower() == "bearer" and _same(value, self.secret):
            return "token"
        return "token" if self.session_ok(conn.cookies.get(SESSION_COOKIE, "")) else None

    def login(self, token: str) -> str | None:
        """The session cookie's value for a right token, else None."""
        if self.kind != "token" or not _same(token, self.secret):
            return None
        expires = str(int(time.time()) + SESSION_SECONDS)
        return f"{expires}.{self._sign('session', expires)}"

    def session_ok(self, value: str) -> bool:
        expires, _, mac = value.partition(".")
        return (expires.isdigit() and int(expires) > time.time()
                and _same(mac, self._sign("session", expires)))

    # -- requests that change state ---------------------------------------------------------

    def csrf_token(self, identity: str) -> str:
        return self._sign("csrf", identity)

    def may_change(self, conn: HTTPConnection, identity: str, token: str) -> str | None:
        """None when this POST may change state, else why not."""
        if not _same(token, self.csrf_token(identity)):
            return "the form's CSRF token is missing or stale: reload the page and try again"
        origin = conn.headers.get("origin") or conn.headers.get("referer")
        if origin and origin != "null" and _origin(origin) != _origin(str(conn.base_url)):
            return f"the request came from another site ({_origin(origin)})"
        return None

    def host_ok(self, conn: HTTPConnection) -> bool:
        """Without an auth, only a loopback Host (no DNS rebinding onto 127.0.0.1)."""
        if self.kind is not None:
            return True
        host = conn.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name)

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _origin(url: str) -> str:
    """host[:port] of a URL: a proxy that ends TLS may change the scheme, never the site."""
    return urlsplit(url).netloc.lower()


class GuardMiddleware:
    """Host check, sign-in, and the security headers, in front of every route."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self._refusal(conn, scope)
        if refusal is not None:
            status, text, extra = refusal
            await _plain(with_headers, status, text, extra)
            return
        await self.app(scope, receive, with_headers)

    def _refusal(self, conn: HTTPConnection,
                 scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return 405, "method not allowed", {"allow": "GET, HEAD, POST"}
        if not self.guard.host_ok(conn):
            return 400, ("unexpected Host header: this dashboard answers only to a loopback "
                         "name (127.0.0.1, localhost) unless it is run with --auth"), {}
        identity = self.guard.identity(conn)
        scope.setdefault("state", {})["identity"] = identity
        if identity is not None or scope["path"].startswith(OPEN_PATHS):
            return None
        if self.guard.kind == "basic":
            return 401, "sign in", {"www-authenticate": 'Basic realm="dj-consumer"'}
        if self.guard.kind == "token" and scope["method"] == "GET":
            return 303, "sign in", {"location": "/login"}
        return 401, "sign in first", {}


async def _plain(send: Send, status: int, text: str, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"text/plain; charset=utf-8")]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})
