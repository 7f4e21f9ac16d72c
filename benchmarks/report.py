"""Result tables: plain text for the terminal, markdown for benchmarks/results.md."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class Report:
    header: list[tuple[str, str]]
    sections: list[Section] = field(default_factory=list)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def target(self, what: str, measured: str, ok: bool | None) -> None:
        self.targets.append((what, measured, ok))

    def text(self) -> str:
        out = [f"{k:<12} {v}" for k, v in self.header]
        for s in self.sections:
            out += ["", s.title, "=" * len(s.title)]
            out += _grid(s.columns, s.rows)
            out += [f"  * {n}" for n in s.notes]
        if self.targets:
            out += ["", "Targets", "======="]
            out += _grid(["target", "measured", ""], [[w, m, _mark(ok)] for w, m, ok in self.targets])
        return "\n".join(out) + "\n"

    def markdown(self) -> str:
        out = ["# dj_consumer benchmarks", "", "Produced by `make bench` (`python -m benchmarks.run`).", ""]
        out += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in self.header]
        for s in self.sections:
            out += ["", f"## {s.title}", ""]
            out += _md(s.columns, s.rows)
            if s.notes:
                out += [""] + [f"- {n}" for n in s.notes]
        if self.targets:
            out += ["", "## Targets", ""]
            out += _md(["target", "measured", ""], [[w, m, _mark(ok)] for w, m, ok in self.targets])
        return "\n".join(out) + "\n"


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[ok]


def _grid(columns: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(c)] + [len(r[i]) for r in rows if i < len(r)]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            parts.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        return "  ".join(parts).rstrip()

    return [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def _md(columns: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(columns) - 1)
    return ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.0f}%" if b > 0 else "-"


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"
