"""What the interpreter reports and what the rules make of it.

The interpreter emits a ``Use`` for every pass of a model it can follow: an inference (under
``no_grad``, or an export), a training step (a loop or function that runs a backward pass), a
gradient penalty (``torch.autograd.grad`` of a model's output with ``create_graph=True``), or,
in a function summary, a plain forward whose kind the caller decides. A rule turns a ``Use``
into a ``Problem``, with candidate fixes as ``LineEdit``s, best first; ``verify`` keeps a fix
only when the fixed script, read again, no longer has the problem and has no new one.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INFERENCE, TRAINING_STEP, FORWARD = "inference", "training_step", "forward"
GRADIENT_PENALTY = "gradient_penalty"


class Text:
    """The lines and syntax tree of the script being read (compared by identity), and how
    messages name its lines (``line 5``; in a notebook ``line 2 of cell 3``)."""

    def __init__(self, lines: list[str], tree: ast.Module,
                 line_name: Callable[[int], str] | None = None):
        self.lines = lines
        self.tree = tree
        self.line = line_name or "line {}".format
        self._previous: dict[int, ast.stmt | None] | None = None

    def previous(self, stmt: ast.stmt) -> ast.stmt | None:
        """The statement right before ``stmt`` in the same block, if any."""
        if self._previous is None:
            self._previous = {}
            for node in ast.walk(self.tree):
                for name in ("body", "orelse", "finalbody"):
                    body = getattr(node, name, None)
                    if isinstance(body, list):
                        for before, after in zip([None, *body], body):
                            self._previous[id(after)] = before
        return self._previous.get(id(stmt))


@dataclass(frozen=True)
class LineEdit:
    """Replace ``removes`` whole lines from ``line`` on with ``text`` (``removes=0``: insert
    before ``line``; ``line`` may be one past the last line)."""

    line: int
    text: str
    removes: int = 0

    @property
    def shift(self) -> int:
        """How many lines the edit adds (negative: removes)."""
        return self.text.count("\n") - self.removes


@dataclass(frozen=True)
class Place:
    """Where a use happens, as far as a fix needs: the statement running, the loops around it
    (outermost first), the ``with`` that switched autograd off, the body of a function
    decorated to do so, all in the function the use is in."""

    text: Text
    stmt: ast.stmt
    loops: tuple[ast.stmt, ...] = ()
    nograd_with: ast.With | None = None
    decorated: tuple[ast.stmt, ...] | None = None

    def _indent(self, stmt: ast.stmt) -> str | None:
        line = self.text.lines[stmt.lineno - 1]
        indent = line[: len(line) - len(line.lstrip())]
        return indent if len(indent.encode()) == stmt.col_offset else None

    def before(self, stmt: ast.stmt, code: str) -> LineEdit | None:
        indent = self._indent(stmt)
        return None if indent is None else LineEdit(stmt.lineno, f"{indent}{code}\n")

    def after(self, stmt: ast.stmt, code: str) -> LineEdit | None:
        indent = self._indent(stmt)
        if indent is None:
            return None
        lines = self.text.lines
        line = stmt.end_lineno + 1
        if line > len(lines) and not lines[-1].endswith(("\n", "\r")):
            return LineEdit(line, f"\n{indent}{code}")
        return LineEdit(line, f"{indent}{code}\n")

    def top(self, body: list[ast.stmt], code: str) -> LineEdit | None:
        """Insert ``code`` as the first statement of a body (after its docstring)."""
        first = body[0]
        if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            return self.after(first, code) if len(body) == 1 else self.before(body[1], code)
        return self.before(first, code)

    def remove(self, stmt: ast.stmt) -> LineEdit | None:
        """Delete a statement that has its lines to itself."""
        rest = self.text.lines[stmt.end_lineno - 1].encode()[stmt.end_col_offset:]
        if self._indent(stmt) is None or rest.strip():
            return None
        return LineEdit(stmt.lineno, "", stmt.end_lineno - stmt.lineno + 1)


@dataclass(frozen=True)
class Part:
    """A module a use is about besides the model as passed: a part of a trained model whose
    parameters are frozen, or the model a gradient penalty differentiates.

    ``name``: the part as the script can spell it (``model.backbone``), if it can; ``kind``: its
    class, or the call that built it; ``batchnorm``: whether it holds BatchNorm (None: maybe);
    ``facts``: the modes it may be in; ``frozen``: where its parameters were frozen, (line,
    helper called there or None).
    """

    name: str | None
    kind: str | None
    batchnorm: bool | None
    facts: frozenset = frozenset()
    frozen: tuple[int, str | None] | None = None


@dataclass(frozen=True)
class Use:
    """A pass of a model: ``kind`` is INFERENCE, TRAINING_STEP, GRADIENT_PENALTY or FORWARD.

    ``facts``: the modes the model may be in; ``labels``: the objects it may be.
    ``variable``: the model as a name or attribute chain the script can call ``.eval()`` on;
    ``shown``: its expression as the script spells it (None when there is none to show).
    ``grad``: what switched autograd off (an inference under no_grad); ``export``: the export
    function's dotted name and ``exporter`` its call as spelled. ``helper``: (function, call
    line) when the model is that function's parameter; ``callee``: (function, file) when the
    pass runs inside a function of another file. ``optimized``: an optimiser holds the
    model's parameters. ``parts``: for a training step, the frozen parts of the model; for a
    gradient penalty, the model differentiated.
    """

    kind: str
    line: int
    col: int  # 1-based, in characters
    facts: frozenset
    labels: frozenset
    place: Place
    variable: str | None = None
    shown: str | None = None
    grad: str | None = None
    export: str | None = None
    exporter: str | None = None
    helper: tuple[str, int] | None = None
    callee: tuple[str, Path] | None = None
    optimized: bool = False
    parts: tuple[Part, ...] = ()


@dataclass(frozen=True)
class Problem:
    code: str
    line: int
    col: int  # 1-based, in characters
    message: str
    related: tuple[str, ...]
    fixes: tuple[tuple[LineEdit, ...], ...]  # candidate fixes, best first
