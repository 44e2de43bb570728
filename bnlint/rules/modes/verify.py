"""From uses to findings and checked fixes.

Every rule that reads uses (a script rule with ``EVENT`` and ``problem(use)``) turns the
interpreter's uses into problems. A candidate fix is kept only when the script it gives, read
again, no longer has that problem and has no new one (of any such rule); a fix that also
solves later problems serves them too, so one inserted line fixes them all.
"""

from __future__ import annotations

import ast
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bnlint import notebook
from bnlint.edits import Edit, apply_edits, split_lines
from bnlint.findings import Hit
from bnlint.rules import RULES, Safety, Scope
from bnlint.rules.modes.events import LineEdit, Problem
from bnlint.rules.modes.frames import TooComplex
from bnlint.rules.modes.interpreter import Interpreter
from bnlint.rules.modes.parsed import ParsedFile
from bnlint.rules.modes.summaries import Summaries, for_script
from bnlint.files import Site, read_notebook

CACHED = 16


def mode_rules() -> tuple:
    """The rule modules that read uses."""
    return tuple(module for rule in RULES.values() if rule.scope == Scope.SCRIPT
                 and hasattr(module := rule.implementation(), "EVENT"))


def problems(path: Path | None, text: str, summaries: Summaries,
             tree: ast.Module | None = None) -> list[Problem]:
    """Every problem the use-reading rules find in a script's source (fixes unchecked);
    ``tree``: the source already parsed."""
    try:
        tree = tree or ast.parse(text)
    except SyntaxError:
        return []
    file = ParsedFile(tree, text, path, _cell_lines(path, text))
    try:
        uses = Interpreter(file, summaries.project, summaries).run()
    except (TooComplex, RecursionError):  # nested deeper than Python can follow
        return []
    rules = mode_rules()
    found: dict[tuple, Problem] = {}
    for (kind, _, _), group in uses.items():
        for rule in rules:
            if rule.EVENT != kind:
                continue
            for use in group:
                problem = rule.problem(use)
                if problem is not None:
                    found.setdefault((problem.code, problem.line, problem.col), problem)
                    break
    return sorted(found.values(), key=lambda p: (p.line, p.col, p.code))


def _cell_lines(path: Path | None, text: str) -> Callable[[int], str] | None:
    """How messages name a line of a notebook's script: by its cell."""
    if path is None or not notebook.is_notebook(path):
        return None
    try:
        script = read_notebook(path)
    except (OSError, ValueError):
        return None
    if script.text != text:
        return None  # a fixed version, whose messages nobody reads

    def name(line: int) -> str:
        cell, number = script.locate(line)
        return f"line {number} of cell {cell.number}"

    return name


def _edit(lines: list[str], change: LineEdit, path: str, code: str) -> Edit:
    def at(line: int) -> tuple[int, int]:
        if line > len(lines):
            return (len(lines), len(lines[-1])) if lines else (1, 0)
        return line, 0

    if change.removes:
        what = f"remove line {change.line}"
    else:
        what = f"insert `{change.text.strip()}` at line {change.line}"
    return Edit(path, at(change.line), at(change.line + change.removes), change.text, code,
                Safety.UNSAFE, what)


def _apply(text: str, fix: Iterable[LineEdit]) -> str:
    lines = split_lines(text)
    return apply_edits(text, [_edit(lines, change, "", "") for change in fix])


def _shift(line: int, fix: Iterable[LineEdit]) -> int:
    return line + sum(change.shift for change in fix if change.line <= line)


def _solved(path, text: str, found: list[Problem], problem: Problem,
            fix: tuple[LineEdit, ...], summaries: Summaries) -> list[Problem]:
    """The problems a fix removes; none unless it removes ``problem`` and adds no other."""
    after = {(p.code, p.line, p.col) for p in problems(path, _apply(text, fix), summaries)}
    before = {(p.code, _shift(p.line, fix), p.col): p for p in found}
    if not after <= set(before) - {(problem.code, _shift(problem.line, fix), problem.col)}:
        return []
    return [p for key, p in before.items() if key not in after]


_checked: OrderedDict = OrderedDict()


def checked(path: Path | None, text: str, tree: ast.Module | None = None,
            ) -> tuple[tuple[Problem, tuple[LineEdit, ...] | None], ...]:
    """Each problem with a fix verified on the fixed source, or None. The rules reading the
    same parse of a file share one analysis; a later parse gets it again only while no file
    of the project changed. (Messages name other files relative to the working directory.)"""
    key = (path and os.path.realpath(path), os.getcwd(), text)
    entry = _checked.get(key)
    if entry is not None and (tree is not None and entry[0] is tree
                              or entry[1].project.unchanged()):
        _checked.move_to_end(key)
        _checked[key] = (tree or entry[0], *entry[1:])
        return entry[2]
    summaries = for_script(path)
    found = problems(path, text, summaries, tree)
    chosen: dict[Problem, tuple[LineEdit, ...]] = {}
    for problem in found:
        for fix in () if problem in chosen else problem.fixes:
            solved = _solved(path, text, found, problem, fix, summaries)
            if solved:
                for other in solved:
                    chosen.setdefault(other, fix)
                break
    result = tuple((p, chosen.get(p)) for p in found)
    _checked[key] = (tree, summaries, result)
    if len(_checked) > CACHED:
        _checked.popitem(last=False)
    return result


def hits(path: Path, text: str, tree: ast.Module, code: str) -> Iterator[Hit]:
    """The problems of rule ``code`` in a script, each with its verified fix as edits."""
    lines = split_lines(text)
    for problem, fix in checked(path, text, tree):
        if problem.code == code:
            site = Site(str(path), problem.line, problem.col, problem.line, problem.col)
            edits = tuple(_edit(lines, change, str(path), code) for change in fix or ())
            yield Hit(code=code, message=problem.message, module=None, related=problem.related,
                      anchor=site, fix=Safety.UNSAFE if fix else None, edits=edits)
