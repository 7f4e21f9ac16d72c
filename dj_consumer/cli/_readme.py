"""The README's generated blocks: the configuration table and the command list.

`python -m dj_consumer.cli._readme` rewrites them in README.md; tests/unit/test_settings.py
fails when they differ from what the declarations and the parser give.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from dj_consumer.cli._parser import build_parser
from dj_consumer.settings import readme_table


def command_list() -> str:
    """One line per command: `dj-consumer NAME` — its help."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return "\n".join(f"- `dj-consumer {action.dest}` — {action.help}"
                     for action in sub._choices_actions)


def rewrite(readme: str) -> str:
    for tag, body in (("config-table", readme_table()), ("cli-commands", command_list())):
        pattern = re.compile(rf"(<!-- {tag} -->\n).*?(<!-- /{tag} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- {tag} --> … <!-- /{tag} --> block")
        readme = pattern.sub(_between(body), readme)
    return readme


def _between(body: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text()))
    print(f"rewrote the generated blocks of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
