"""What the interpreter knows of the code it is in, apart from the state: the function (or
module) being analysed, its loops, statements and ``with`` blocks; and its limits."""

from __future__ import annotations

import ast

from bnlint.rules.modes.state import State

MAX_LOOP_PASSES = 8
MAX_CALL_DEPTH = 12
# statements interpreted per script before giving up on it (and reporting nothing)
BUDGET = 200_000


class TooComplex(Exception):
    """The script needs more work than ``BUDGET`` to analyse."""


class Frame:
    """One function being analysed (or the module): what is lexical, not part of the state."""

    def __init__(self, name: str, func=None, parent: int = 0, inherited: bool = False,
                 call_line: int | None = None, scope: tuple | None = None):
        self.name = name
        self.call_line = call_line
        self.func = func
        self.parent = parent
        self.inherited = inherited
        self.locals, self.params, self.globals = scope or (set(), set(), set())
        self.defs: dict[str, ast.FunctionDef] = {}
        self.regions: list[bool] = []
        self.loops: list[ast.stmt] = []
        self.stmts: list[ast.stmt] = []
        self.nograd_withs: list[ast.With] = []
        self.decorated_nograd = False
        self.returns: list[State] = []
        self.return_labels: frozenset = frozenset()
        self.breaks: list[State] = []
        self.continues: list[State] = []

    @property
    def training(self) -> bool:
        return self.inherited or (bool(self.regions) and self.regions[-1])
