"""The argument parser: commands, their flags, and one-line mistakes with a suggestion.

Config flags are not written here: each command takes the keys whose declaration
(dj_consumer.config, `setting(commands=…)`) names it, with the declared help, default and
DJ_* variable. Only a command's own arguments (ids, --limit, --json …) are added by hand.
Imports stay light (no SQLAlchemy, no structlog) so `dj-consumer --help` starts fast.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from dj_consumer import __version__
from dj_consumer.settings import Setting, for_command

EXAMPLES = """\
examples:
  dj-consumer work --database-url mysql+pymysql://root@127.0.0.1/app --import myapp.jobs
  dj-consumer work --config dj_consumer.toml -n 4 --queues mail,default
  DJ_DATABASE_URL=sqlite:///demo.db dj-consumer status
  dj-consumer why 42                   # why is job 42 not running?
  dj-consumer failed retry --all --name NewsletterJob
  dj-consumer enqueue NewsletterJob --payload '{"list_id": 7}' --queue mail

Every setting also reads an environment variable (--database-url is DJ_DATABASE_URL,
--queues is DJ_QUEUES …) and a config file (--config FILE, else ./dj_consumer.toml, else
[tool.dj_consumer] in ./pyproject.toml); flags win over variables, variables over the file.
"""

Runner = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (`--conc` is not `--concurrency`), with one-line errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        choice = message.partition("invalid choice: ")[2]
        if choice:  # a mistyped command or value: suggest the closest one
            word = choice.split("'")[1] if "'" in choice else choice
            options = [o.strip("' ") for o in choice.partition("choose from ")[2].rstrip(")").split(",")]
            hint = difflib.get_close_matches(word, options, n=1)
            if hint:
                message += f"; did you mean {hint[0]!r}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown(self, extra: Sequence[str]) -> NoReturn:
        """An argument no command takes; a flag gets the nearest real flag as a hint."""
        word = extra[0]
        options = [o for action in self._actions for o in action.option_strings]
        hint = difflib.get_close_matches(word.split("=", 1)[0], options, n=1, cutoff=0.6) \
            if word.startswith("-") else []
        self.error(f"unrecognized argument {word}" + (f"; did you mean {hint[0]}?" if hint else ""))


def add_command(sub: Any, name: str, run: Runner, *, help: str, description: str = "",
                config: bool = True, imports: bool = False, json: bool = False,
                settings_of: str | None = None, nested: bool = False) -> Parser:
    """A subcommand with its declared config flags (those of `settings_of`, default its own
    name), and the shared --config/--import/--json. `nested` (a subcommand's subcommand):
    flags left out set nothing, so the same flag given before the subcommand survives."""
    p: Parser = sub.add_parser(name, help=help, description=description or help,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)
    unset: Any = argparse.SUPPRESS if nested else None
    if config:
        add_settings(p, settings_of or name, unset)
        p.add_argument("--config", metavar="FILE", default=unset,
                       help="a TOML file of config keys (default ./dj_consumer.toml, or "
                            "[tool.dj_consumer] in ./pyproject.toml)  [DJ_CONFIG]")
    if imports:
        p.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                       default=argparse.SUPPRESS if nested else [],
                       help="import a module (or a .py file) that registers handlers; repeatable")
    if json:
        p.add_argument("--json", action="store_true", default=unset if nested else False,
                       help="print JSON instead of a table")
    return p


def add_settings(p: argparse.ArgumentParser, command: str, unset: Any = None) -> None:
    """The flags of every config key this command takes, from its declaration."""
    group = p.add_argument_group("settings (flag > DJ_* variable > config file)")
    for s in for_command(command):
        group.add_argument(*s.flags, dest=s.key, default=unset, help=_help(s), **_kind(s))


def _kind(s: Setting) -> dict[str, Any]:
    if s.kind == "bool":
        return {"action": argparse.BooleanOptionalAction}
    kwargs: dict[str, Any] = {"metavar": s.metavar}
    if s.kind in ("int", "float"):
        kwargs["type"] = int if s.kind == "int" else float
    if s.choices:
        kwargs["choices"] = s.choices
        kwargs.pop("metavar")
    return kwargs


def _help(s: Setting) -> str:
    default = "" if s.kind == "bool" or s.default_text == "—" else f" (default {s.default_text})"
    # argparse formats help with %: a literal percent sign must be doubled.
    return f"{s.help}{default}  [{s.env}]".replace("%", "%%")


def build_parser() -> Parser:
    from dj_consumer.cli import handlers, recurring, rows, runs, status, tools, web, work

    parser = Parser(
        prog="dj-consumer",
        description="Run a Rails delayed_jobs table's jobs with Python handlers, beside the "
                    "Ruby delayed_job workers; inspect and repair the table.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dj-consumer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (work, status, rows, runs, tools, handlers, recurring, web):
        module.add(sub)
    return parser


def parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a supervisor's children
    if extra:
        commands = _subparsers(parser)
        target = commands.get(getattr(args, "subcommand", None) or "", None) \
            or commands.get(args.command or "", parser)
        target.unknown(extra)
    return args


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, Parser]:
    """command (and `failed retry` style subcommand) → its parser."""
    found: dict[str, Parser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update(_subparsers(sub))
    return found
