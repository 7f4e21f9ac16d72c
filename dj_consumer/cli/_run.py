"""Running one command: its config (file < DJ_* < flags), logging, and one line per mistake.

Every command's failure reaches the operator as `dj-consumer: error: <one line>` and exit 2:
configuration mistakes (ConfigError), database trouble (dj_consumer.dberrors names it: refused
port, unknown host, wrong password, missing table …), unreadable files. A traceback is left
only for what is a bug of ours.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dj_consumer.errors import ConfigError, DJConsumerError

if TYPE_CHECKING:
    from dj_consumer.config import Config
    from dj_consumer.store import Store


def main(argv: Sequence[str] | None = None) -> int:
    from dj_consumer.cli._parser import build_parser, parse

    parser = build_parser()
    args = parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except DJConsumerError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dj-consumer jobs | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file we were asked to read or write
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"cannot use{where}: {exc.strerror or exc}")
    except Exception as exc:
        if not type(exc).__module__.startswith(("sqlalchemy", "pymysql", "psycopg", "sqlite3")):
            raise  # a bug of ours: keep the traceback
        from dj_consumer.dberrors import describe

        cfg = getattr(args, "cfg", None)
        return _fail(describe(exc, cfg.url if cfg is not None else None))


def _fail(message: str) -> int:
    print(f"dj-consumer: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def build_config(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """This command's Config: the config file, then DJ_* variables, then flags; and the file."""
    from dj_consumer import settings

    found = settings.find_file(getattr(args, "config", None) or os.environ.get("DJ_CONFIG"))
    file_values = settings.load_file(*found) if found else {}
    flags = {s.key: getattr(args, s.key, None) for s in settings.for_command(args.command)}
    cfg = settings.layered(file_values, os.environ, flags)
    args.cfg = cfg
    return cfg, found[0] if found else None


def config(args: argparse.Namespace) -> Config:
    """build_config, then logging configured from it, and what the operator should know
    reported (the config file read, unknown DJ_* variables, Rails-only URL parameters)."""
    from dj_consumer import settings
    from dj_consumer.cli import _logs

    cfg, found = build_config(args)
    _logs.configure(cfg.log_format, cfg.log_level)
    log = _logs.get("dj_consumer.cli")
    if found:
        log.debug("config.file", path=str(found))
    for line in settings.unknown_env(os.environ):
        log.warning("config.unknown_env", problem=line)
    for note in cfg.url_notes:
        log.info("config.database_url", note=note)
    return cfg


def store(args: argparse.Namespace, *, check: bool = True) -> Store:
    """A Store for this command's config, with the table checked (one line if it is wrong)."""
    from dj_consumer.store import Store

    st = Store(config(args))
    if check:
        try:
            st.check()
        except BaseException:
            st.close()
            raise
    return st


def import_handlers(modules: Sequence[str]) -> None:
    """Import the modules (or .py files) that register handlers; one line if one fails."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            if name.endswith(".py") or os.sep in name:
                path = Path(name).resolve()
                sys.path.insert(0, str(path.parent))
                importlib.import_module(path.stem)
            else:
                importlib.import_module(name)
        except Exception as exc:
            raise ConfigError(f"--import {name}: {type(exc).__name__}: {exc}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 0 (a --limit, say)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def registry() -> Any:
    from dj_consumer import job

    return job
