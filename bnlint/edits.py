"""Minimal text edits to the user's source: what a source fix produces, how edits are applied,
shown as a unified diff, and written back atomically.

Positions are (line, column) with 1-based lines and 0-based *character* columns; ``ast``
reports UTF-8 byte columns, which ``span_of`` converts.
"""

from __future__ import annotations

import ast
import difflib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edit:
    """Replace the text between ``start`` and ``end`` of ``path`` with ``text``."""

    path: str
    start: tuple[int, int]
    end: tuple[int, int]
    text: str
    code: str
    safety: str  # "safe" | "unsafe"
    description: str


def _char_col(line_text: str, byte_col: int) -> int:
    return len(line_text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def span_of(node: ast.AST, lines: list[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """An ast node's start and end as (line, character column)."""
    start = (node.lineno, _char_col(lines[node.lineno - 1], node.col_offset))
    end = (node.end_lineno, _char_col(lines[node.end_lineno - 1], node.end_col_offset))
    return start, end


def _offset(lines: list[str], position: tuple[int, int]) -> int:
    line, col = position
    return sum(len(text) for text in lines[: line - 1]) + col


class OverlappingEdits(ValueError):
    pass


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply edits to one file's text; identical duplicates count once, overlaps are refused."""
    lines = text.splitlines(keepends=True)
    spans = sorted({(_offset(lines, e.start), _offset(lines, e.end), e.text) for e in edits})
    out, cursor = [], 0
    for start, end, replacement in spans:
        if start < cursor:
            raise OverlappingEdits(f"two fixes touch the same text near offset {start}")
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def unified_diff(path: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"a/{path}", tofile=f"b/{path}",
    ))


class FileChanged(RuntimeError):
    pass


def write_atomic(path: str | Path, expected: str, new_text: str) -> None:
    """Replace the file's contents, unless it no longer holds ``expected`` (someone edited it
    since it was read). The new text goes to a temporary file beside it, then is renamed over
    it, so a crash never leaves a half-written file; the file's permissions are kept."""
    path = Path(path)
    current = path.read_text(encoding="utf-8")
    if current != expected:
        raise FileChanged(f"{path} changed since bnlint read it; not writing")
    mode = path.stat().st_mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".bnlint")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(new_text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
