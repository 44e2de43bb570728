"""One file as the analysis reads it: its syntax tree, what its imported names stand for, and
the functions and classes it defines at the top level."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bnlint.edits import span_of, split_lines
from bnlint.rules.modes.events import Text
from bnlint.rules.modes.vocabulary import (
    assigned_names,
    backward_blocks,
    declared_names,
    dotted,
    import_names,
)


@dataclass(eq=False)
class ClassInfo:
    node: ast.ClassDef
    file: ParsedFile
    bases: list[str]  # dotted names, resolved through the file's imports
    methods: dict[str, ast.FunctionDef]
    attributes: set[str] = field(default_factory=set)  # set as ``self.<name> = ...``

    @property
    def name(self) -> str:
        return self.node.name


class ParsedFile:
    """A parsed file; ``path`` is None for text that is not (yet) a file. ``line_name``: how
    messages name a line of it, when not ``line N``."""

    def __init__(self, tree: ast.Module, text: str, path: Path | None = None,
                 line_name: Callable[[int], str] | None = None):
        self.tree = tree
        self.path = path
        self.text = Text(split_lines(text), tree, line_name)
        self.imports = import_names(tree)
        self.functions: dict[str, ast.FunctionDef] = {}
        self.classes: dict[str, ClassInfo] = {}
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[stmt.name] = stmt
            elif isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = self._class_info(stmt)
        self._sources: dict[int, str] = {}
        self._backward: set[int] | None = None
        self._trains = "backward" in text  # no backward pass anywhere: nothing to look for
        self._scopes: dict[int, tuple[set, set, set]] = {}
        self._called: set[str] | None = None

    @property
    def lines(self) -> list[str]:
        return self.text.lines

    def _class_info(self, node: ast.ClassDef) -> ClassInfo:
        methods = {s.name: s for s in node.body
                   if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
        attributes = {t.attr for t in ast.walk(node)
                      if isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store)
                      and isinstance(t.value, ast.Name) and t.value.id == "self"}
        return ClassInfo(node, self, [self.qualname(b) or "" for b in node.bases], methods,
                         attributes)

    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name of an expression, its root resolved through the imports."""
        name = dotted(node)
        if name is None:
            return None
        root, _, rest = name.partition(".")
        if root in self.imports:
            root = self.imports[root]
        return f"{root}.{rest}" if rest else root

    def source(self, node: ast.AST) -> str:
        """The expression as the file spells it (on one line)."""
        if id(node) not in self._sources:
            if getattr(node, "end_lineno", None) is None:
                text = ast.unparse(node)
            else:
                lines = self.lines
                (first, start), (last, end) = span_of(node, lines)
                text = "".join(lines[first - 1:last])
                text = text[start: len(text) - len(lines[last - 1]) + end]
            self._sources[id(node)] = " ".join(text.split())
        return self._sources[id(node)]

    def position(self, node: ast.AST) -> tuple[int, int]:
        """(line, 1-based character column) where a node starts."""
        (line, col), _ = span_of(node, self.lines)
        return line, col + 1

    def calls_backward(self, block: ast.AST) -> bool:
        """Whether a block (a function, a loop, the module) itself runs a backward pass."""
        if self._backward is None:
            self._backward = backward_blocks(self.tree) if self._trains else set()
        return id(block) in self._backward

    def scope(self, func: ast.AST) -> tuple[set[str], set[str], set[str]]:
        """A function's local names, parameters and names declared ``global``."""
        if id(func) not in self._scopes:
            self._scopes[id(func)] = (
                assigned_names(func),
                {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)},
                declared_names(func))
        return self._scopes[id(func)]

    @property
    def called(self) -> set[str]:
        """The names of the functions and methods the file calls anywhere."""
        if self._called is None:
            self._called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
                            for n in ast.walk(self.tree) if isinstance(n, ast.Call)
                            and isinstance(n.func, (ast.Name, ast.Attribute))}
        return self._called
