"""Jupyter notebooks as scripts: their code cells, in order, read as one Python file.

IPython's own syntax is not Python: line magics (``%time``), shell lines (``!pip``) and lines
that do not parse (``model?``) read as ``pass``, and a cell run by a cell magic other than
``%%time`` and its kind (``%%bash``) is left out. Every line of the script is a line of some
cell, so a position in the script maps to (cell, line): cells are numbered from 1 and
markdown cells count, as they appear from the top of the notebook.

A fix is an edit of the script; ``apply_edits`` makes it an edit of each cell's ``source`` in
the notebook's JSON text, leaving every other byte (outputs, metadata, formatting) as it was.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, replace

from bnlint.edits import Edit, split_lines
from bnlint.edits import apply_edits as apply_text_edits
from bnlint.edits import moved_lines as moved_text_lines

SUFFIX = ".ipynb"
# cell magics whose body is Python run in the notebook's namespace
PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun"}
MAX_REPAIRS = 20


class NotANotebook(ValueError):
    """A file that is not a notebook bnlint can read (not JSON, nbformat 3, not Python)."""


def is_notebook(path) -> bool:
    return str(path).endswith(SUFFIX)


@dataclass(frozen=True)
class Cell:
    number: int  # from 1, every kind of cell counted
    source: str  # as the notebook holds it
    first: int  # its first line in the script
    lines: int


@dataclass(frozen=True)
class Script:
    text: str  # the code cells, one after another
    cells: tuple[Cell, ...]

    def locate(self, line: int) -> tuple[Cell, int]:
        """The cell holding a line of the script, and the line's number in it."""
        for cell in reversed(self.cells):
            if line >= cell.first:
                return cell, min(line - cell.first + 1, cell.lines + 1)
        raise ValueError(f"line {line} is in no cell")

    def place(self, finding):
        """A finding on a line of the script, on its line of its cell instead."""
        if finding.line is None or not self.cells:
            return finding
        cell, line = self.locate(finding.line)
        return replace(finding, cell=cell.number, line=line)


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _as_python(source: str) -> list[str]:
    """A cell's lines with IPython syntax replaced by ``pass``; all blank when the cell is
    run by another program (``%%bash``) or cannot be made Python."""
    lines = split_lines(source)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        if first[2:].split(" ")[0] not in PYTHON_CELL_MAGICS:
            return ["\n"] * len(lines)
        lines[0] = "pass\n"

    def stub(index: int) -> None:
        text = lines[index]
        lines[index] = text[: len(text) - len(text.lstrip())] + "pass\n"

    for index, text in enumerate(lines):
        if text.lstrip().startswith(("%", "!")):
            stub(index)
    for _ in range(MAX_REPAIRS):
        try:
            ast.parse("".join(lines))
            return lines
        except SyntaxError as exc:
            if not exc.lineno or exc.lineno > len(lines) or lines[exc.lineno - 1].strip() == "pass":
                break
            stub(exc.lineno - 1)
    return ["\n"] * len(lines)


def _cells(notebook) -> list[dict]:
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotANotebook("not a notebook in nbformat 4 (no list of cells)")
    metadata = notebook.get("metadata") or {}
    language = ((metadata.get("kernelspec") or {}).get("language")
                or (metadata.get("language_info") or {}).get("name") or "python")
    if str(language).lower() != "python":
        raise NotANotebook(f"a {language} notebook")
    return notebook["cells"]


def script_of(text: str) -> Script:
    """The script of a notebook's JSON text."""
    try:
        notebook = json.loads(text)
    except ValueError as exc:
        raise NotANotebook(f"not JSON: {exc}") from None
    parts: list[str] = []
    cells = []
    line = 1
    for number, cell in enumerate(_cells(notebook), 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        lines = _as_python(source)
        cells.append(Cell(number, source, line, len(lines)))
        parts += lines
        line += len(lines)
    return Script("".join(parts), tuple(cells))


# --- positions in the notebook's JSON text -------------------------------------------------

_SPACE = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


class _Spans:
    """Where each cell's ``source`` value lies in the JSON text, and where each of its
    strings starts: enough to edit a source in place and to name a line of the file."""

    def __init__(self, text: str):
        self.text = text
        self.at = 0
        self.sources: dict[int, tuple[int, int, list[int]]] = {}  # cell index -> spans
        self._value(path=())

    def _space(self) -> None:
        self.at = _SPACE.match(self.text, self.at).end()

    def _value(self, path: tuple) -> None:
        self._space()
        char = self.text[self.at: self.at + 1]
        start = self.at
        if char == "{":
            self.at += 1
            self._space()
            while self.text[self.at] != "}":
                key, self.at = json.decoder.scanstring(self.text, self.at + 1)
                self._space()
                self.at += 1  # the colon
                self._value((*path, key))
                self._space()
                if self.text[self.at] == ",":
                    self.at += 1
                    self._space()
            self.at += 1
        elif char == "[":
            self.at += 1
            self._space()
            index, strings = 0, []
            while self.text[self.at] != "]":
                strings.append(self.at)
                self._value((*path, index))
                index += 1
                self._space()
                if self.text[self.at] == ",":
                    self.at += 1
                    self._space()
            self.at += 1
            if len(path) == 3 and path[0] == "cells" and path[2] == "source":
                self.sources[path[1]] = (start, self.at, strings)
            return
        elif char == '"':
            _, self.at = json.decoder.scanstring(self.text, self.at + 1)
        else:
            match = _SCALAR.match(self.text, self.at)
            if match is None:
                raise NotANotebook(f"not JSON at offset {self.at}")
            self.at = match.end()
        if len(path) == 3 and path[0] == "cells" and path[2] == "source":
            self.sources[path[1]] = (start, self.at, [start])


def file_line(text: str, cell: int, line: int) -> int | None:
    """The line of the notebook file (its JSON ``text``) where a line of a cell's source is
    written (for tools that show the file itself); None when that is not one place."""
    try:
        spans = _Spans(text).sources.get(cell - 1)
    except (NotANotebook, IndexError, ValueError):
        return None
    if spans is None:
        return None
    start, _, strings = spans
    if len(strings) == 1 and text[start] == '"':
        return text.count("\n", 0, start) + 1 if line == 1 else None
    if not 0 < line <= len(strings):
        return None
    return text.count("\n", 0, strings[line - 1]) + 1


def _encode(source: str, old: str) -> str:
    """A cell's new source in the style of the old JSON value: a list of lines, one a line
    as nbformat writes it (indented like the old entries), or one string."""
    if old.startswith('"'):
        return json.dumps(source, ensure_ascii=False)
    lines = split_lines(source)
    if not lines:
        return "[]"
    gap = re.match(r"\[(\s*)", old).group(1)
    closing = re.search(r"(\s*)\]$", old).group(1)
    items = f",{gap or ' '}".join(json.dumps(line, ensure_ascii=False) for line in lines)
    return f"[{gap}{items}{closing}]"


def moved_lines(before: str, after: str) -> dict[tuple[int, int], tuple[int, int]]:
    """Each (cell, line) of the notebook ``before`` that the edits kept -> its place in
    ``after``."""
    old, new = script_of(before), script_of(after)

    def place(script: Script, line: int) -> tuple[int, int]:
        cell, line = script.locate(line)
        return cell.number, line

    return {place(old, a): place(new, b) for a, b in moved_text_lines(old.text, new.text).items()}


def apply_edits(text: str, edits: list[Edit]) -> str:
    """A notebook's JSON text with edits of its script made in its cells' sources."""
    script = script_of(text)
    by_cell: dict[int, list[Edit]] = {}
    for edit in edits:
        cell, start = script.locate(edit.start[0])
        end_line = edit.end[0] - cell.first + 1
        by_cell.setdefault(cell.number, []).append(
            replace(edit, start=(start, edit.start[1]), end=(end_line, edit.end[1])))
    spans = _Spans(text).sources
    changes = []
    for cell in script.cells:
        if cell.number not in by_cell:
            continue
        source = cell.source
        closed = source.endswith(("\n", "\r")) or not source
        new = apply_text_edits(source if closed else source + "\n", by_cell[cell.number])
        if not closed and new.endswith("\n"):
            new = new[:-1]
        start, end, _ = spans[cell.number - 1]
        changes.append((start, end, _encode(new, text[start:end])))
    for start, end, value in sorted(changes, reverse=True):
        text = text[:start] + value + text[end:]
    return text
