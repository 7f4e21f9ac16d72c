"""The Jinja2 environment: every value is HTML-escaped (autoescape on for every template, and
nothing is marked safe), plus the few filters the templates use."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from dj_consumer.cli._out import ago, dumps


def environment() -> Environment:
    env = Environment(loader=PackageLoader("dj_consumer.web", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, when=_when, age=_age, until=_until, queue=_queue, json=dumps)
    env.globals["link"] = link
    return env


def link(path: str, **params: Any) -> str:
    """`path?k=v…` with the parameters that are set (escaped again by autoescape in HTML)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _age(value: datetime | None, now: datetime) -> str:
    return "-" if value is None else ago((now - value).total_seconds())


def _until(value: datetime | None, now: datetime) -> str:
    return "-" if value is None else ago((value - now).total_seconds())


def _queue(value: str | None) -> str:
    return "nil" if value is None else value
