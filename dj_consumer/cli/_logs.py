"""Logging for the command line: one renderer for structlog events and stdlib records alike.

dj_consumer's own events go straight from structlog to stderr (no stdlib logging on the hot
path). Records from handlers and libraries (`logging.getLogger(...)`, SQLAlchemy's --sql-log
echo, `warnings`) go through structlog's ProcessorFormatter with the same renderer and level,
so `--log-format json` output is JSON on every line. Each line is one write() call, so lines
from the two paths never interleave.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure(fmt: str = "console", level: str | int = "info") -> None:
    """structlog and the stdlib root logger, both rendering `fmt` to stderr at `level`."""
    number = LEVELS[level] if isinstance(level, str) else level
    shared: list[Any] = [structlog.processors.add_log_level,
                         structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        shared.extend([nil_queue, one_line_outcomes])
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _stdlib(shared, renderer, number)


def _stdlib(shared: list[Any], renderer: Any, level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    handler.set_name("dj-consumer")
    handler.setLevel(level)  # records SQLAlchemy's echo makes skip the loggers' levels
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "dj-consumer"]:
        root.removeHandler(old)  # configure() again (the demo runs several commands)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    # --sql-log is SQLAlchemy's echo (Config.sql_log), which adds a plain-text stdout handler
    # to its logger unless that has one: give it one that does nothing, so the records reach
    # ours. Without echo, SQLAlchemy's loggers would inherit INFO and log every statement.
    engine_log = logging.getLogger("sqlalchemy.engine.Engine")
    if not engine_log.handlers:
        engine_log.addHandler(logging.NullHandler())
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)


def nil_queue(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Ruby's word for the nil queue in human output (`queue=nil`, not `queue=None`)."""
    if "queue" in event_dict and event_dict["queue"] is None:
        event_dict["queue"] = "nil"
    return event_dict


#: Events whose traceback (exc_info) only JSON logs carry: on a terminal they stay one line
#: (error_class and error say what happened; `dj-consumer failed show ID` has the traceback).
ONE_LINE = frozenset({"job.rescheduled", "job.failed"})


def one_line_outcomes(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if event_dict.get("event") in ONE_LINE:
        event_dict.pop("exc_info", None)
    return event_dict


def get(name: str) -> Any:
    return structlog.get_logger(name)
