"""Config's declarations read back: one Setting per key, and the three places values come from.

A key is declared once, in dj_consumer.config (`setting(...)`). From that declaration come the
`dj-consumer` flags and their help, the DJ_* variable names, what a config file may hold, and
the configuration table (docs/configuration.md). Values are layered: config file < DJ_* variables < flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from dj_consumer.config import Config, base_types, closest
from dj_consumer.errors import ConfigError

ENV_PREFIX = "DJ_"
#: DJ_* variables that are not keys: the config file's path, and the test suite's and the
#: benchmarks' server URLs. Any other unknown DJ_* variable is reported at start.
OTHER_ENV = ("DJ_CONFIG",)
OTHER_ENV_PREFIXES = ("DJ_TEST_", "DJ_BENCH_")
#: Looked for in the working directory when no --config is given.
DEFAULT_FILE = "dj_consumer.toml"
PYPROJECT_TABLE = "tool.dj_consumer"

_KINDS = {
    "str": "str", "int": "int", "float": "float", "bool": "bool",
    "Mapping[str,Any]": "mapping", "tuple[str|None,...]": "list", "tuple[str,...]": "list",
}


@dataclass(frozen=True)
class Setting:
    """One config key as declared: what the CLI, the environment and the docs show."""

    key: str
    kind: str  # str, int, float, bool, list (comma separated on the command line), mapping
    optional: bool
    default: Any
    help: str
    flags: tuple[str, ...]
    commands: tuple[str, ...]
    metavar: str | None
    choices: tuple[str, ...] | None
    env: str | None
    shown_default: str | None

    @property
    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)


@cache
def settings() -> tuple[Setting, ...]:
    """Every key of Config, in declaration order."""
    out = []
    for f in fields(Config):
        meta = f.metadata
        if "help" not in meta:
            raise AssertionError(f"Config.{f.name} is not declared with setting(help=…)")
        base = str(f.type).replace(" ", "")
        optional = base.endswith("|None")
        default = None if f.default_factory is not dataclasses.MISSING else f.default
        out.append(Setting(
            key=f.name, kind=_KINDS[base.removesuffix("|None")], optional=optional,
            default=default, help=meta["help"], flags=meta["flags"], commands=meta["commands"],
            metavar=meta["metavar"], choices=meta["choices"],
            env=ENV_PREFIX + f.name.upper() if meta["env"] else None,
            shown_default=meta["shown_default"],
        ))
    return tuple(out)


def for_command(command: str) -> list[Setting]:
    """The keys `dj-consumer COMMAND` takes as flags."""
    return [s for s in settings() if command in s.commands and s.flags]


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The DJ_* variables that are set, as key → value (one ConfigError line per bad value)."""
    values: dict[str, Any] = {}
    for s in settings():
        if s.env is None or s.env not in environ:
            continue
        field_type = next(f.type for f in fields(Config) if f.name == s.key)
        values[s.key] = from_text(s.key, environ[s.env], field_type)
    return values


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """One line per DJ_* variable that is no setting (a typo would be silently ignored)."""
    known = {s.env for s in settings() if s.env} | set(OTHER_ENV)
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known \
                or name.startswith(OTHER_ENV_PREFIXES):
            continue
        hint = closest(name, known)
        lines.append(f"{name} is not a dj-consumer setting"
                     + (f" (did you mean {hint}?)" if hint else "") + "; it is ignored")
    return lines


def find_file(explicit: str | None, cwd: Path | None = None) -> tuple[Path, str | None] | None:
    """The config file to read: --config/DJ_CONFIG, else ./dj_consumer.toml, else
    ./pyproject.toml when it has a [tool.dj_consumer] table; (path, table) or None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return path, PYPROJECT_TABLE if path.name == "pyproject.toml" else None
    here = cwd or Path.cwd()
    if (here / DEFAULT_FILE).is_file():
        return here / DEFAULT_FILE, None
    pyproject = here / "pyproject.toml"
    if pyproject.is_file() and "[tool.dj_consumer]" in pyproject.read_text(errors="replace"):
        return pyproject, PYPROJECT_TABLE
    return None


def load_file(path: Path, table: str | None = None) -> dict[str, Any]:
    """A TOML file's keys (or one table's, e.g. tool.dj_consumer), checked against Config."""
    try:
        data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not TOML: {exc}") from None
    where = str(path)
    for part in (table.split(".") if table else []):
        data = data.get(part, {}) if isinstance(data, dict) else {}
        where = f"{path} [{table}]"
    keys = {s.key for s in settings()}
    for key in data:
        if key not in keys:
            hint = closest(key, keys)
            raise ConfigError(f"{where}: unknown config key {key!r}"
                              + (f" (did you mean {hint!r}?)" if hint else ""))
    values = dict(data)
    if isinstance(values.get("queues"), list):  # TOML has no null: "nil" is the nil queue
        values["queues"] = [None if q == "nil" else q for q in values["queues"]]
    return values


def layered(file_values: Mapping[str, Any], environ: Mapping[str, str],
            flags: Mapping[str, Any]) -> Config:
    """The Config for: config file < DJ_* variables < flags (a flag left out is None)."""
    values: dict[str, Any] = {}
    for layer in (file_values, env_values(environ),
                  {k: v for k, v in flags.items() if v is not None}):
        if "database_url" in layer:  # a URL given later replaces an earlier db_config
            values.pop("db_config", None)
        if "db_config" in layer:
            values.pop("database_url", None)
        values.update(layer)
    return Config.from_mapping(values)


def flag_hint(word: str, options: list[str]) -> str | None:
    """The option a mistyped flag was probably meant to be."""
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return match[0] if match else None


def readme_table() -> str:
    """The configuration table (docs/configuration.md), generated from the declarations."""
    rows = ["| key | flag · variable | default | meaning |", "|---|---|---|---|"]
    for s in settings():
        flag = " ".join(f"`{f}`" for f in s.flags) or "—"
        env = f"`{s.env}`" if s.env else "file only"
        default = s.default_text if s.shown_default or s.default is None else f"`{s.default_text}`"
        rows.append(f"| `{s.key}` | {flag} · {env} | {default} | {_one_line(s.help)} |")
    return "\n".join(rows)


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def from_text(key: str, raw: str, annotation: Any) -> Any:
    """A DJ_* variable's text as the key's type (lists stay text: from_mapping splits them)."""
    base, optional = base_types(annotation)
    if optional and raw == "":
        return None
    try:
        if base == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if base == "int":
            return int(raw)
        if base == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"DJ_{key.upper()} must be {base}, got {raw!r}") from None
    return raw
