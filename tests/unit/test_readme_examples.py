"""The README's example and every command line in the README and docs/ stay true: the example
registers and runs as it says, and each `dj-consumer …` line of a shell block parses with the
current CLI (issue #14: the README's example, config table and CLI list cannot drift; the
table and the command list are tests/unit/test_settings.py)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import pytest

import dj_consumer
from dj_consumer import Registry
from dj_consumer.cli._parser import build_parser
from dj_consumer.testing import Failed, Succeeded, run_inline
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(language, body) of each ``` block."""
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                yield lang, "\n".join(body)
                lang = None
        elif lang is not None:
            body.append(line)


def command_lines() -> list[tuple[str, str]]:
    """(doc, line) for each `dj-consumer …` line in the docs' shell blocks."""
    out = []
    for doc in DOCS:
        for lang, body in fenced_blocks(doc.read_text()):
            if lang not in ("", "sh", "bash", "shell", "console"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                m = re.match(r"^(?:[A-Z_]+=\S+\s+)*(dj-consumer\s.*)$", line)
                if m:
                    out.append((doc.name, m.group(1)))
    return out


COMMAND_LINES = command_lines()


def test_the_docs_have_command_lines() -> None:
    assert len(COMMAND_LINES) >= 20


@pytest.mark.parametrize(("doc", "line"), COMMAND_LINES)
def test_each_documented_command_line_parses(doc: str, line: str) -> None:
    line = re.sub(r"\s*>\s*\S+", "", line)  # a redirection
    argv = shlex.split(line.replace("[", "").replace("]", ""), comments=True)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{line}` does not parse (exit {exc.code})")


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    return next(body for lang, body in fenced_blocks(section) if lang == "python")


def test_the_readme_example_registers_and_runs_as_it_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry()
    monkeypatch.setattr(dj_consumer, "job", registry)  # the example's `job`, fresh
    sent: list[int] = []
    namespace = {"__name__": "myapp.jobs", "send_list": sent.append}
    exec(compile(readme_example(), "README.md#example", "exec"), namespace)

    assert set(registry.names()) >= {"NewsletterJob", "User#send_welcome"}
    out = run_inline("NewsletterJob", {"list_id": 7}, registry=registry)
    assert isinstance(out, Succeeded) and sent == [7]
    welcome = {"object": {"id": 1, "deleted_at": None}, "method_name": "send_welcome",
               "args": ["en"]}
    assert isinstance(run_inline("User#send_welcome", welcome, registry=registry), Succeeded)
    gone = {**welcome, "object": {"id": 2, "deleted_at": "2026-01-01"}}
    out = run_inline("User#send_welcome", gone, registry=registry)
    assert isinstance(out, Failed) and out.last_error.startswith("dj_consumer.errors.FailJob: user is gone\n")
    spec = registry.spec("NewsletterJob")
    assert spec is not None and spec.max_attempts == 5


def test_fenced_blocks_pair_their_fences() -> None:
    text = "```python\nx\n```\nprose\n```sh\ndj-consumer jobs\n```\n"
    assert list(fenced_blocks(text)) == [("python", "x"), ("sh", "dj-consumer jobs")]
