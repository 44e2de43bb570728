"""Minimal text edits to the user's source: what a source fix produces, how edits are applied
and shown as a unified diff (``bnlint.files`` writes them back).

Positions are (line, column) with 1-based lines and 0-based *character* columns; ``ast``
reports UTF-8 byte columns, which ``span_of`` converts. Lines end where Python's tokenizer
ends them (``\\r\\n``, ``\\r``, ``\\n``): ``str.splitlines`` also breaks at form feeds and
other characters that may sit inside a line of code, and would shift every line after them.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bnlint.rules import Safety

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


@dataclass(frozen=True)
class Edit:
    """Replace the text between ``start`` and ``end`` of ``path`` with ``text``."""

    path: str
    start: tuple[int, int]
    end: tuple[int, int]
    text: str
    code: str
    safety: Safety
    description: str


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` as ``ast`` numbers them, each with its line ending."""
    return _LINE.findall(text)


def _char_col(line_text: str, byte_col: int) -> int:
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def span_of(node: ast.AST, lines: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """An ast node's start and end as (line, character column); ``lines`` from ``split_lines``."""
    start = (node.lineno, _char_col(lines[node.lineno - 1], node.col_offset))
    end = (node.end_lineno, _char_col(lines[node.end_lineno - 1], node.end_col_offset))
    return start, end


def offset(lines: list[str], position: tuple[int, int]) -> int:
    """The character offset in the text of a (line, column) position."""
    line, col = position
    return sum(len(text) for text in lines[: line - 1]) + col


def position(lines: list[str], at: int) -> tuple[int, int]:
    """The (line, column) position of a character offset: the inverse of ``offset``."""
    for number, text in enumerate(lines, 1):
        if at < len(text) or number == len(lines):
            return number, at
        at -= len(text)
    return 1, at


def node_at(tree: ast.AST, kind: type, line: int, col: int, end_line: int, end_col: int):
    """The ``kind`` node spanning exactly these 1-based lines and 0-based UTF-8 byte columns
    (what ``ast`` and code objects record), or ``None``."""
    for node in ast.walk(tree):
        if isinstance(node, kind) and (node.lineno, node.col_offset, node.end_lineno,
                                       node.end_col_offset) == (line, col, end_line, end_col):
            return node
    return None


def callee_name(call: ast.Call) -> str | None:
    """``Conv2d`` for ``nn.Conv2d(...)`` and ``Conv2d(...)``; ``None`` for other callees."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _line_end(text: str, at: int) -> int:
    ends = [i for i in (text.find("\r", at), text.find("\n", at)) if i >= 0]
    return min(ends) if ends else len(text)


def add_argument(lines: list[str], call: ast.Call,
                 argument: str) -> tuple[tuple[int, int], tuple[int, int], str]:
    """(start, end, text) of the edit that appends ``argument`` (``"bias=False"``) to a call
    in the call's own style: ``f(a, x)`` inline; ``f(a, x,)`` after a trailing comma; on a
    line of its own, indented like the last argument, when the closing parenthesis has its
    own line. Comments after the last argument stay on its line."""
    text = "".join(lines)
    close = offset(lines, span_of(call, lines)[1]) - 1  # the call's ")"
    arguments = [*call.args, *call.keywords]
    if not arguments:
        at = position(lines, close)
        return at, at, argument
    last = max(arguments, key=lambda a: (a.end_lineno, a.end_col_offset))
    after = offset(lines, span_of(last, lines)[1])
    comma, i = None, after
    while i < close:  # past the parentheses around the last argument, spaces and comments
        if text[i] == "#":
            i = _line_end(text, i)
            continue
        if text[i] == ")":
            after = i + 1
        elif text[i] == ",":
            comma = i
            break
        i += 1
    own_line = "\n" in text[after:close] or "\r" in text[after:close]
    if not own_line:
        at = position(lines, comma + 1 if comma is not None else after)
        return at, at, f" {argument}," if comma is not None else f", {argument}"
    indent = re.match(r"[ \t]*", lines[last.lineno - 1]).group()
    if comma is not None:
        at = position(lines, _line_end(text, comma))
        return at, at, f"\n{indent}{argument},"
    end = _line_end(text, after)
    return position(lines, after), position(lines, end), f",{text[after:end]}\n{indent}{argument}"


class OverlappingEdits(ValueError):
    pass


def _newline(text: str) -> str:
    match = re.search(r"\r\n|\r|\n", text)
    return match.group() if match else "\n"


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply edits to one file's text; identical duplicates count once, overlaps are refused.
    Line breaks in the new text follow the file's own (``\\r\\n`` in a Windows file)."""
    lines = split_lines(text)
    newline = _newline(text)
    spans = sorted({(offset(lines, e.start), offset(lines, e.end), e.text) for e in edits})
    out, cursor = [], 0
    for start, end, replacement in spans:
        if start < cursor:
            raise OverlappingEdits(f"two fixes touch the same text near offset {start}")
        out.append(text[cursor:start])
        out.append(re.sub(r"\r\n|\r|\n", lambda _: newline, replacement))
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def _overlap(a: tuple, b: tuple) -> bool:
    """Two (path, start, end) spans overlap, or insert at the same point (in unknown order)."""
    (path, start, end), (other, other_start, other_end) = a, b
    if path != other:
        return False
    return start < other_end and other_start < end or start == end == other_start == other_end


def compatible(groups: Iterable[tuple[Edit, ...]]) -> tuple[list[tuple[Edit, ...]],
                                                            list[tuple[Edit, ...]]]:
    """Split groups of edits (each group is one fix, applied whole or not at all) into those
    that can go in together, earlier groups first, and those that clash with an earlier one."""
    kept: list[tuple[Edit, ...]] = []
    dropped: list[tuple[Edit, ...]] = []
    taken: list[tuple] = []
    for group in groups:
        spans = [(e.path, e.start, e.end) for e in group]
        if any(_overlap(span, other) for span in spans for other in taken):
            dropped.append(group)
        else:
            kept.append(group)
            taken += spans
    return kept, dropped


def unified_diff(path: str, before: str, after: str) -> str:
    """A diff ``git apply`` and ``patch -p1`` take: ``a/``/``b/`` prefixes on relative paths;
    a path outside the working directory is shown as it is."""
    old, new = (path, path) if os.path.isabs(path) else (f"a/{path}", f"b/{path}")
    return "".join(difflib.unified_diff(split_lines(before), split_lines(after),
                                        fromfile=old, tofile=new))


def moved_lines(before: str, after: str) -> dict[int, int]:
    """Each line (1-based) of ``before`` that the edits kept -> its number in ``after``."""
    matcher = difflib.SequenceMatcher(None, split_lines(before), split_lines(after),
                                      autojunk=False)
    return {old + k + 1: new + k + 1
            for old, new, size in matcher.get_matching_blocks() for k in range(size)}


