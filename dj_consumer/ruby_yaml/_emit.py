"""Psych's text, byte for byte: its choice of style per String and libyaml 0.2.5's emitter.

Rails writes a handler with `object.to_yaml`: Psych's YAMLTree picks a style for each String
(`visit_String`), and libyaml's emitter (`emitter.c`) decides what it may really use
(`yaml_emitter_analyze_scalar`, `yaml_emitter_select_scalar_style`), then writes it, folding
lines past 80 columns. This is a port of exactly those parts, for the block mappings and
sequences a handler holds; tests/interop compares it with Ruby's own output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dj_consumer.ruby_yaml._scalars import tokenize

PLAIN, SINGLE, DOUBLE, LITERAL = "plain", "single", "double", "literal"
BEST_WIDTH, BEST_INDENT = 80, 2
_BREAKS = "\r\n\x85\u2028\u2029"
_BLANKZ = " \t" + _BREAKS + "\0"
_ESCAPES = {"\0": "0", "\x07": "a", "\x08": "b", "\t": "t", "\n": "n", "\x0b": "v", "\x0c": "f",
            "\r": "r", "\x1b": "e", '"': '"', "\\": "\\", "\x85": "N", "\xa0": "_",
            "\u2028": "L", "\u2029": "P"}
# visit_String's regexps, in Python: Ruby's \Z also matches before a final newline, and its
# ^ $ are line anchors; [[:word:]] is \w.
_INNER_NEWLINE = re.compile(r"\n(?!\n?\Z)")
_STARTS_ODD = re.compile(r'^\W[^"]*$', re.MULTILINE)
_OCTAL_LOOKALIKE = re.compile(r"\A0[0-7]*[89]")
#: Text whose analysis needs no loop: no space, break, indicator or non-ASCII character.
_SIMPLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@+=;$()~^-]*")


@dataclass(frozen=True, slots=True)
class Scalar:
    text: str
    tag: str | None = None  # "!ruby/class", "!binary", "!!str" …
    plain_implicit: bool = True
    quoted_implicit: bool = False
    style: str = PLAIN


@dataclass(frozen=True, slots=True)
class Collection:
    items: list[Any]  # Nodes (a sequence) or (key, value) pairs of Nodes (a mapping)
    mapping: bool
    tag: str | None = None


Node = Scalar | Collection


def string(text: str) -> Scalar:
    """Psych::Visitors::YAMLTree#visit_String (Psych 4.0), line_width unset."""
    if _INNER_NEWLINE.search(text):
        style = LITERAL
    elif text == "<<":
        return Scalar(text, "!!str", False, False, SINGLE)
    elif text in ("y", "n") or _STARTS_ODD.search(text):
        style = DOUBLE
    elif tokenize(text) != text or _OCTAL_LOOKALIKE.match(text):  # a Symbol reads as its name
        style = SINGLE
    else:
        style = PLAIN
    return Scalar(text, None, True, True, style)


def _printable(char: str) -> bool:
    """libyaml's IS_PRINTABLE: no C0 controls but LF, no DEL…U+009F, no surrogates, BOM,
    U+FFFE/U+FFFF, nor anything past the BMP (which Psych therefore writes as \\U…)."""
    code = ord(char)
    return (code == 0x0A or 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF
            or (0xE000 <= code <= 0xFFFD and code != 0xFEFF))


@dataclass(slots=True)
class _Analysis:
    multiline: bool
    flow_plain: bool
    block_plain: bool
    single: bool
    block: bool


def _analyze(text: str) -> _Analysis:
    """yaml_emitter_analyze_scalar."""
    if not text:
        return _Analysis(False, False, True, True, False)
    if _SIMPLE.fullmatch(text):
        return _Analysis(False, True, True, True, True)
    block_ind = flow_ind = text.startswith(("---", "..."))
    line_breaks = special = False
    leading_space = leading_break = trailing_space = trailing_break = False
    break_space = space_break = previous_space = previous_break = False
    preceded_by_ws = True
    last = len(text) - 1
    for i, char in enumerate(text):
        followed_by_ws = (text[i + 1] if i < last else "\0") in _BLANKZ
        if i == 0:
            if char in "#,[]{}&*!|>'\"%@`":
                flow_ind = block_ind = True
            if char in "?:":
                flow_ind = True
                block_ind = block_ind or followed_by_ws
            if char == "-" and followed_by_ws:
                flow_ind = block_ind = True
        else:
            if char in ",?[]{}":
                flow_ind = True
            if char == ":":
                flow_ind = True
                block_ind = block_ind or followed_by_ws
            if char == "#" and preceded_by_ws:
                flow_ind = block_ind = True
        if not _printable(char):
            special = True
        if char in _BREAKS:
            line_breaks = True
        if char == " ":
            leading_space = leading_space or i == 0
            trailing_space = trailing_space or i == last
            break_space = break_space or previous_break
            previous_space, previous_break = True, False
        elif char in _BREAKS:
            leading_break = leading_break or i == 0
            trailing_break = trailing_break or i == last
            space_break = space_break or previous_space
            previous_space, previous_break = False, True
        else:
            previous_space = previous_break = False
        preceded_by_ws = char in _BLANKZ
    flow_plain = block_plain = single = block = True
    if leading_space or leading_break or trailing_space or trailing_break:
        flow_plain = block_plain = False
    if trailing_space:
        block = False
    if break_space:
        flow_plain = block_plain = single = False
    if space_break or special:
        flow_plain = block_plain = single = block = False
    if line_breaks:
        flow_plain = block_plain = False
    if flow_ind:
        flow_plain = False
    if block_ind:
        block_plain = False
    return _Analysis(line_breaks, flow_plain, block_plain, single, block)


def dump_document(root: Collection) -> str:
    """`--- !ruby/object:X` and the rest, as `root.to_yaml` writes it."""
    emitter = _Emitter()
    emitter.indicator("---", True, False, False)
    emitter.node(root)
    emitter.write_indent()
    if emitter.open_ended:
        # A kept final line break ("|+") leaves the document open: libyaml closes it.
        emitter.indicator("...", True, False, False)
        emitter.write_indent()
    return "".join(emitter.out)


class _Emitter:
    """The state of libyaml's emitter that block output depends on."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.column = 0
        self.whitespace = True
        self.indention = True
        self.indent = -1
        self.indents: list[int] = []
        self.flow_level = 0
        self.mapping_context = False
        self.simple_key_context = False
        self.open_ended = False

    # -- low level (PUT, WRITE, write_indent, write_indicator) ------------------------------

    def put(self, text: str) -> None:
        self.out.append(text)
        self.column += len(text)

    def put_break(self) -> None:
        self.out.append("\n")
        self.column = 0

    def write_break(self, char: str) -> None:
        if char == "\n":
            self.put_break()
        else:
            self.out.append(char)
            self.column = 0

    def write_indent(self) -> None:
        indent = max(self.indent, 0)
        if (not self.indention or self.column > indent
                or (self.column == indent and not self.whitespace)):
            self.put_break()
        if self.column < indent:
            self.put(" " * (indent - self.column))
        self.whitespace = self.indention = True

    def indicator(self, text: str, need_ws: bool, is_ws: bool, is_indention: bool) -> None:
        if need_ws and not self.whitespace:
            self.put(" ")
        self.put(text)
        self.whitespace = is_ws
        self.indention = self.indention and is_indention

    def increase_indent(self, flow: bool, indentless: bool) -> None:
        self.indents.append(self.indent)
        if self.indent < 0:
            self.indent = BEST_INDENT if flow else 0
        elif not indentless:
            self.indent += BEST_INDENT

    def tag(self, tag: str | None) -> None:
        if tag is None:
            return
        if not self.whitespace:
            self.put(" ")
        self.put(tag)  # class names and Psych's tags need no %-escapes
        self.whitespace = self.indention = False

    # -- nodes --------------------------------------------------------------------------------

    def node(self, node: Node, *, mapping: bool = False, simple_key: bool = False) -> None:
        self.mapping_context, self.simple_key_context = mapping, simple_key
        if isinstance(node, Scalar):
            self.scalar(node)
        elif node.mapping:
            self.mapping(node)
        else:
            self.sequence(node)

    def sequence(self, node: Collection) -> None:
        self.tag(node.tag)
        if self.flow_level or not node.items:
            self.indicator("[", True, True, False)
            self.indicator("]", False, False, False)
            return
        self.increase_indent(False, self.mapping_context and not self.indention)
        for item in node.items:
            self.write_indent()
            self.indicator("-", True, False, True)
            self.node(item)
        self.indent = self.indents.pop()

    def mapping(self, node: Collection) -> None:
        self.tag(node.tag)
        if self.flow_level or not node.items:
            self.indicator("{", True, True, False)
            self.indicator("}", False, False, False)
            return
        self.increase_indent(False, False)
        for key, value in node.items:
            self.write_indent()
            if _simple_key(key):
                self.node(key, mapping=True, simple_key=True)
                self.indicator(":", False, False, False)
            else:
                self.indicator("?", True, False, True)
                self.node(key, mapping=True)
                self.write_indent()
                self.indicator(":", True, False, True)
            self.node(value, mapping=True)
        self.indent = self.indents.pop()

    def scalar(self, node: Scalar) -> None:
        if (node.style == PLAIN and node.plain_implicit and node.tag is None
                and _SIMPLE.fullmatch(node.text)):
            # Most scalars (numbers, names, ids): plain is allowed and there is nothing to fold.
            if not self.whitespace:
                self.put(" ")
            self.put(node.text)
            self.whitespace = self.indention = False
            return
        analysis = _analyze(node.text)
        style, tag = self.select_style(node, analysis), node.tag
        if tag is None and not node.quoted_implicit and style != PLAIN:
            tag = "!"  # a plain-only value (nil, a number) written quoted: say it is not a str
        self.tag(tag)
        self.increase_indent(True, False)
        breaks = not self.simple_key_context
        if style == PLAIN:
            self.plain(node.text, breaks)
        elif style == SINGLE:
            self.single(node.text, breaks)
        elif style == DOUBLE:
            self.double(node.text, breaks)
        else:
            self.literal(node.text)
        self.indent = self.indents.pop()

    def select_style(self, node: Scalar, analysis: _Analysis) -> str:
        """yaml_emitter_select_scalar_style."""
        style = node.style
        if self.simple_key_context and analysis.multiline:
            style = DOUBLE
        if style == PLAIN:
            if not (analysis.flow_plain if self.flow_level else analysis.block_plain):
                style = SINGLE
            if not node.text and (self.flow_level or self.simple_key_context):
                style = SINGLE
            if node.tag is None and not node.plain_implicit:
                style = SINGLE
        if style == SINGLE and not analysis.single:
            style = DOUBLE
        if style == LITERAL and (not analysis.block or self.flow_level
                                 or self.simple_key_context):
            style = DOUBLE
        return style

    # -- the writers (yaml_emitter_write_*_scalar) ------------------------------------------

    def plain(self, text: str, allow_breaks: bool) -> None:
        if not self.whitespace and (text or self.flow_level):
            self.put(" ")
        if _SIMPLE.fullmatch(text):  # nothing to fold
            self.put(text)
            self.whitespace = self.indention = False
            return
        spaces = breaks = False
        for i, char in enumerate(text):
            if char == " ":
                if (allow_breaks and not spaces and self.column > BEST_WIDTH
                        and text[i + 1:i + 2] != " "):
                    self.write_indent()
                else:
                    self.put(char)
                spaces = True
            elif char in _BREAKS:
                if not breaks and char == "\n":
                    self.put_break()
                self.write_break(char)
                self.indention, breaks = True, True
            else:
                if breaks:
                    self.write_indent()
                self.put(char)
                self.indention = spaces = breaks = False
        self.whitespace = self.indention = False

    def single(self, text: str, allow_breaks: bool) -> None:
        self.indicator("'", True, False, False)
        spaces = breaks = False
        last = len(text) - 1
        for i, char in enumerate(text):
            if char == " ":
                if (allow_breaks and not spaces and self.column > BEST_WIDTH
                        and 0 < i < last and text[i + 1] != " "):
                    self.write_indent()
                else:
                    self.put(char)
                spaces = True
            elif char in _BREAKS:
                if not breaks and char == "\n":
                    self.put_break()
                self.write_break(char)
                self.indention, breaks = True, True
            else:
                if breaks:
                    self.write_indent()
                self.put("''" if char == "'" else char)
                self.indention = spaces = breaks = False
        if breaks:
            self.write_indent()
        self.indicator("'", False, False, False)
        self.whitespace = self.indention = False

    def double(self, text: str, allow_breaks: bool) -> None:
        self.indicator('"', True, False, False)
        spaces = False
        last = len(text) - 1
        for i, char in enumerate(text):
            if (not _printable(char) or char == "\ufeff" or char in _BREAKS
                    or char in '"\\'):
                self.put("\\" + _escape(char))
                spaces = False
            elif char == " ":
                if (allow_breaks and not spaces and self.column > BEST_WIDTH
                        and 0 < i < last):
                    self.write_indent()
                    if text[i + 1] == " ":
                        self.put("\\")
                else:
                    self.put(char)
                spaces = True
            else:
                self.put(char)
                spaces = False
        self.indicator('"', False, False, False)
        self.whitespace = self.indention = False

    def literal(self, text: str) -> None:
        self.indicator("|", True, False, False)
        if text[:1] in (" ", *_BREAKS):
            self.indicator(str(BEST_INDENT), False, False, False)
        chomp = "-" if not text or text[-1] not in _BREAKS else (
            "+" if len(text) == 1 or text[-2] in _BREAKS else "")
        self.open_ended = chomp == "+"
        if chomp:
            self.indicator(chomp, False, False, False)
        self.put_break()
        self.indention = self.whitespace = True
        breaks = True
        for char in text:
            if char in _BREAKS:
                self.write_break(char)
                self.indention, breaks = True, True
            else:
                if breaks:
                    self.write_indent()
                self.put(char)
                self.indention, breaks = False, False


def _escape(char: str) -> str:
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    if code <= 0xFF:
        return f"x{code:02X}"
    if code <= 0xFFFF:
        return f"u{code:04X}"
    return f"U{code:08X}"


def _simple_key(node: Node) -> bool:
    """yaml_emitter_check_simple_key: a one-line scalar of at most 128 bytes, or an empty
    collection."""
    if isinstance(node, Collection):
        return not node.items
    if _analyze(node.text).multiline:
        return False
    length = len(node.text.encode("utf-8", "surrogatepass"))
    if node.tag is not None:
        length += len(node.tag)
    return length <= 128
