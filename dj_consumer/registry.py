"""The handlers: `job.run("Name")` and its hooks, held in a Registry."""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from dj_consumer.errors import RegistryError, RegistryWarning

Hook = Callable[..., Any]
F = TypeVar("F", bound=Hook)

TIMEOUT_MODES = ("cooperative", "process")
#: A Ruby constant path, then optionally `#method` / `.method`: what every dispatch name is.
_RUBY_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*(?:[#.][^#.\s]+)?")
#: What each kind of function is called with (SPEC §1).
ARGUMENTS = {"run": ("job",), "before": ("job",), "after": ("job",), "success": ("job",),
             "error": ("job", "exc"), "failure": ("job", "exc")}
#: The name that registers a hook for every job (`@job.error("*")`, for Sentry and the like).
EVERY_JOB = "*"
#: Global hooks run around the job's own, as Ruby's Delayed::Worker.lifecycle callbacks wrap
#: a job's hooks: the global `before` first, every other global hook after the job's own.
_GLOBAL_FIRST = frozenset({"before"})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything registered for one dispatch name."""

    name: str
    run: Hook | None = None
    hooks: dict[str, Hook] = field(default_factory=dict)
    max_attempts: int | None = None
    max_run_time: float | None = None
    reschedule_at: Callable[[datetime, int], datetime] | None = None
    destroy_failed_jobs: bool | None = None
    queue: str | None = None
    timeout: str = "cooperative"
    #: hooks registered for every job ("*"), shared by every spec of one Registry
    global_hooks: dict[str, Hook] = field(default_factory=dict)

    def hook(self, kind: str) -> Hook | None:
        """The job's own hook of this kind (not the global one)."""
        return self.hooks.get(kind)

    def hooks_for(self, kind: str) -> tuple[Hook, ...]:
        """Every hook of this kind to call, in order: the job's own and the global one."""
        own, every = self.hooks.get(kind), self.global_hooks.get(kind)
        if every is None:
            return () if own is None else (own,)
        if own is None:
            return (every,)
        return (every, own) if kind in _GLOBAL_FIRST else (own, every)


class Registry:
    """Holds the Python handlers by Ruby name. The module-level `dj_consumer.job` is the default one."""

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        self._globals: dict[str, Hook] = {}  # the "*" hooks; every spec holds this very dict

    def run(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        max_run_time: float | None = None,
        reschedule_at: Callable[[datetime, int], datetime] | None = None,
        destroy_failed_jobs: bool | None = None,
        queue: str | None = None,
        timeout: str = "cooperative",
    ) -> Callable[[F], F]:
        """Register the work for `name` ("NewsletterJob", "User#send_welcome", "UserMailer.welcome")."""
        _check_name(name)
        if name == EVERY_JOB:
            raise RegistryError(
                '"*" registers hooks for every job (@job.error("*")); a run handler needs '
                "the job's own Ruby name")
        if max_attempts is not None and max_attempts < 1:
            raise RegistryError(f"{name}: max_attempts must be >= 1, got {max_attempts}")
        if max_run_time is not None and max_run_time <= 0:
            raise RegistryError(f"{name}: max_run_time must be > 0, got {max_run_time}")
        if timeout not in TIMEOUT_MODES:
            raise RegistryError(f"{name}: timeout must be one of {TIMEOUT_MODES}, got {timeout!r}")
        if reschedule_at is not None:
            _check_signature(name, "reschedule_at", reschedule_at, ("now", "attempts"))

        def decorate(fn: F) -> F:
            _check_signature(name, "run", fn, ARGUMENTS["run"])
            _warn_unlikely_name(name, fn)
            spec = self._spec_or_new(name)
            if spec.run is not None:
                raise RegistryError(
                    f"{name} already has a run handler ({_where(spec.run)}); "
                    f"a second one at {_where(fn)} is ambiguous"
                )
            self._specs[name] = replace(
                spec,
                run=fn,
                max_attempts=max_attempts,
                max_run_time=max_run_time,
                reschedule_at=reschedule_at,
                destroy_failed_jobs=destroy_failed_jobs,
                queue=queue,
                timeout=timeout,
            )
            return fn

        return decorate

    def before(self, name: str) -> Callable[[F], F]:
        """(job) before run."""
        return self._hook("before", name)

    def after(self, name: str) -> Callable[[F], F]:
        """(job) always, last."""
        return self._hook("after", name)

    def success(self, name: str) -> Callable[[F], F]:
        """(job) after run returned."""
        return self._hook("success", name)

    def error(self, name: str) -> Callable[[F], F]:
        """(job, exc) on every failed attempt, timeouts included."""
        return self._hook("error", name)

    def failure(self, name: str) -> Callable[[F], F]:
        """(job, exc) once, when the job fails for good."""
        return self._hook("failure", name)

    def _hook(self, kind: str, name: str) -> Callable[[F], F]:
        _check_name(name)

        def decorate(fn: F) -> F:
            _check_signature(name, kind, fn, ARGUMENTS[kind])
            if name == EVERY_JOB:
                if kind in self._globals:
                    raise RegistryError(
                        f"every job (\"*\") already has a {kind} hook "
                        f"({_where(self._globals[kind])}); a second one at {_where(fn)} is ambiguous")
                self._globals[kind] = fn
                return fn
            spec = self._spec_or_new(name)
            if kind in spec.hooks:
                raise RegistryError(
                    f"{name} already has a {kind} hook ({_where(spec.hooks[kind])}); "
                    f"a second one at {_where(fn)} is ambiguous"
                )
            self._specs[name] = replace(spec, hooks={**spec.hooks, kind: fn})
            return fn

        return decorate

    def _spec_or_new(self, name: str) -> JobSpec:
        return self._specs.get(name) or JobSpec(name, global_hooks=self._globals)

    def hooks_only(self, name: str) -> JobSpec:
        """A spec with no run handler and only the global hooks, for a job that fails without
        one of its own (an unparseable row named otherwise than any handler)."""
        return JobSpec(name, global_hooks=self._globals)

    def spec(self, name: str) -> JobSpec | None:
        """The spec for `name`, only if it has a run handler (hooks alone run nothing)."""
        spec = self._specs.get(name)
        return spec if spec is not None and spec.run is not None else None

    def names(self) -> list[str]:
        """Names that can run: the ready query is narrowed to these."""
        return sorted(n for n, s in self._specs.items() if s.run is not None)

    def orphan_hooks(self) -> list[str]:
        """Names with hooks but no run handler: almost always a typo."""
        return sorted(n for n, s in self._specs.items() if s.run is None)

    def clear(self) -> None:
        self._specs.clear()
        self._globals.clear()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.spec(name) is not None

    def __len__(self) -> int:
        return len(self.names())


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise RegistryError(f"a job name must be a non-empty Ruby name like 'NewsletterJob', got {name!r}")


def _warn_unlikely_name(name: str, fn: Hook) -> None:
    """Dispatch names are Ruby's: a class (`NewsletterJob`, `Billing::ChargeJob`), maybe with
    a method (`User#send_welcome`, `UserMailer.welcome`). `newsletter_job` is no Ruby constant,
    so no row will ever have that name: warn (not refuse: the registration is harmless)."""
    if _RUBY_NAME.fullmatch(name) is None:
        warnings.warn(
            f"{name!r} ({_where(fn)}) can never match a Ruby job: names are Ruby constants "
            "like 'NewsletterJob', 'Billing::ChargeJob', 'User#send_welcome' or "
            "'UserMailer.welcome'", RegistryWarning, stacklevel=3)


def _check_signature(name: str, kind: str, fn: object, args: tuple[str, ...]) -> None:
    """A function that cannot take what it will be called with would fail every attempt
    (25 over ~20 days) with a TypeError: refuse it now, naming where it is."""
    if not callable(fn):
        raise RegistryError(f"{name}: the {kind} given is not callable: {fn!r}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): it will tell at the call
    try:
        signature.bind(*args)
    except TypeError as exc:
        wanted = f"({', '.join(args)})"
        raise RegistryError(
            f"{name}: {kind} {_where(fn)} must take {wanted}, but its signature "
            f"{signature} does not ({exc})"
        ) from None


def _where(fn: Hook) -> str:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None and not inspect.isroutine(fn) and not isinstance(fn, type):
        code = getattr(type(fn).__call__, "__code__", None)  # an instance with __call__
    if code is None:
        return repr(fn)
    return f"{getattr(fn, '__qualname__', fn)} in {code.co_filename}:{code.co_firstlineno}"
