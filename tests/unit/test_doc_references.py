"""Every test the docs cite as proof exists: `tests/…py::test_name` (and the `::test_name`
that follow it in the same cell or sentence) in README.md and docs/*.md."""

from __future__ import annotations

import re

from tests.conftest import ROOT

CITE = re.compile(r"`(tests/[\w/]+\.py)((?:::[\w\[\]-]+)?)`|`::(\w+)`")


def citations(text: str) -> list[tuple[str, str | None]]:
    """(file, test name or None) for each citation; a bare `::name` belongs to the file cited
    last before it."""
    out: list[tuple[str, str | None]] = []
    last: str | None = None
    for m in CITE.finditer(text):
        if m.group(1):
            last = m.group(1)
            out.append((last, m.group(2)[2:].split("[")[0] or None))
        elif last is not None:
            out.append((last, m.group(3)))
    return out


def test_every_cited_test_exists() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    seen = 0
    for doc in docs:
        for path, name in citations(doc.read_text()):
            seen += 1
            source = ROOT / path
            if not source.exists():
                missing.append(f"{doc.name}: {path}")
            elif name and not re.search(rf"^\s*(async )?def {re.escape(name)}\(",
                                        source.read_text(), re.M):
                missing.append(f"{doc.name}: {path}::{name}")
    assert seen > 40, "the citation pattern no longer matches the docs"
    assert not missing, "cited tests that do not exist:\n" + "\n".join(missing)


def test_citations_reads_bare_names_against_the_file_before() -> None:
    text = "`tests/a.py::test_x`, `::test_y`; `tests/b.py` `::test_z`"
    assert citations(text) == [("tests/a.py", "test_x"), ("tests/a.py", "test_y"),
                               ("tests/b.py", None), ("tests/b.py", "test_z")]

