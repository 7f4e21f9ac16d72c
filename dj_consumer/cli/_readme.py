"""The generated blocks of the docs: the configuration table (docs/configuration.md) and the
command list (README.md).

`python -m dj_consumer.cli._readme` rewrites them; tests/unit/test_settings.py fails when
they differ from what the declarations and the parser give.
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


#: Where each generated block lives.
BLOCKS = {"config-table": "docs/configuration.md", "cli-commands": "README.md"}


def generated(tag: str) -> str:
    return readme_table() if tag == "config-table" else command_list()


def rewrite(text: str, tags: tuple[str, ...] = tuple(BLOCKS)) -> str:
    for tag in tags:
        pattern = re.compile(rf"(<!-- {tag} -->\n).*?(<!-- /{tag} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"{BLOCKS[tag]} has no <!-- {tag} --> … <!-- /{tag} --> block")
        text = pattern.sub(_between(generated(tag)), text)
    return text


def _between(body: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + body + "\n" + m.group(2)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for tag, name in BLOCKS.items():
        path = root / name
        path.write_text(rewrite(path.read_text(), (tag,)))
        print(f"rewrote the {tag} block of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
