"""The interpreter: walks a script in execution order over the abstract state and emits a
``Use`` for every pass of a model it can follow.

It follows assignments and aliases (``model = Net().eval()``, ``net = model.to(device)``),
attributes (``self.model = model.eval()`` in ``__init__``), calls of the file's own functions,
classes and methods (analysed at each call site with the arguments given there), loops until
their state settles, branches, ``with torch.no_grad():`` blocks and ``@torch.no_grad()``
decorators. A function or class of another file of the project is applied through its
summary (``summaries``); anything else a model is handed to may switch its mode, which then
becomes unknown.
"""

from __future__ import annotations

import ast
from dataclasses import replace

from bnlint.rules.modes.events import FORWARD, INFERENCE, TRAINING_STEP, Place, Use
from bnlint.rules.modes.parsed import ClassInfo, ParsedFile
from bnlint.rules.modes.project import Function, Project
from bnlint.rules.modes.state import (
    AS_CALLED,
    EVAL,
    TRAIN,
    UNKNOWN,
    Fact,
    State,
    join,
    merge_facts,
    modes,
)
from bnlint.rules.modes.vocabulary import (
    COPIES,
    ENABLE_GRAD,
    EXPORTS,
    HARMLESS,
    KEEPS_MODE,
    MODULE_EVIDENCE,
    NO_GRAD,
    PARTS,
    QUERIES,
    SET_GRAD,
    SWITCHES,
    WRAPPERS,
    builds_model,
    dotted,
    exports_in_eval_anyway,
    parameters,
    switches_mode,
)

MAX_LOOP_PASSES = 8
MAX_CALL_DEPTH = 12
# statements interpreted per script before giving up on it (and reporting nothing)
BUDGET = 200_000


class TooComplex(Exception):
    """The script needs more work than ``BUDGET`` to analyse."""


def _frozen(mapping: dict) -> frozenset:
    return frozenset(mapping.items())


def argument_path(label) -> tuple[str, ...] | None:
    """``("model",)`` for a summarised function's parameter ``model``, ``("self", "net")``
    for an attribute of one; None for any other object."""
    attrs = []
    while label[0] == "field":
        attrs.append(label[2])
        label = label[1]
    return (label[1], *reversed(attrs)) if label[0] == "arg" else None


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


class Interpreter:
    """``summaries`` (see ``summaries.Summaries``) gives what the project's other files'
    functions do; ``summarising``: this interpreter is working out such a summary, so it
    also reports plain forward passes, whose kind the caller decides."""

    def __init__(self, file: ParsedFile, project: Project | None = None, summaries=None,
                 summarising: bool = False):
        self.file = file
        self.project = project or Project(())
        self.summaries = summaries
        self.summarising = summarising
        self.uses: dict[tuple, dict[Use, None]] = {}
        self.sink = self.uses  # where uses found now go
        self.stack: list[Frame] = []
        self.inlined: set[int] = set()
        self.memo: dict[tuple, tuple] = {}
        self.budget = BUDGET

    # -- names ------------------------------------------------------------------------------

    @property
    def frame(self) -> Frame:
        return self.stack[-1]

    def qualname(self, node: ast.AST) -> str | None:
        return self.file.qualname(node)

    def source(self, node: ast.AST) -> str:
        return self.file.source(node)

    def is_local_name(self, name: str) -> bool:
        """Whether a name refers to a variable of the script rather than an import."""
        if name in self.file.imports:
            return any(name in f.locals for f in self.stack[1:])
        return True

    def _env_index(self, name: str) -> int:
        frame = self.frame
        if len(self.stack) == 1 or name in frame.globals:
            return 0
        if name in frame.locals:
            return len(self.stack) - 1
        index = frame.parent
        while index > 0 and name not in self.stack[index].locals:
            index = self.stack[index].parent
        return index

    def lookup(self, st: State, name: str) -> frozenset:
        return st.envs[self._env_index(name)].get(name, frozenset())

    def store(self, st: State, name: str, labels: frozenset, const=None) -> None:
        index = self._env_index(name)
        st.envs[index][name] = labels
        if const is None:
            st.consts[index].pop(name, None)
        else:
            st.consts[index][name] = const

    def const(self, st: State, node: ast.AST):
        """A bool the expression certainly has, or a mode saved in a variable, else None."""
        if isinstance(node, ast.Constant) and isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.const(st, node.operand)
            return (not inner) if isinstance(inner, bool) else None
        if isinstance(node, ast.Name):
            return st.consts[self._env_index(node.id)].get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "training":
            facts = st.facts_of(self._peek(st, node.value))
            return ("saved", facts) if facts else None
        return None

    def find_function(self, name: str) -> tuple[ast.FunctionDef, int] | None:
        index = len(self.stack) - 1
        while True:
            if name in self.stack[index].defs:
                return self.stack[index].defs[name], index
            if index == 0:
                break
            index = self.stack[index].parent
        if name in self.file.functions:
            return self.file.functions[name], 0
        return None

    def _peek(self, st: State, node: ast.AST) -> frozenset:
        """Labels of a name or attribute chain, without creating anything."""
        if isinstance(node, ast.Name):
            return self.lookup(st, node.id) if self.is_local_name(node.id) else frozenset()
        if isinstance(node, ast.Attribute):
            return frozenset().union(*(st.fields.get((lb, node.attr), frozenset())
                                       for lb in self._peek(st, node.value)))
        return frozenset()

    def new_object(self, st: State, node: ast.Call, model: bool, confirmed: bool):
        label = ("new", node.lineno, node.col_offset)
        if model:
            what = f"`{self.source(node.func)}()`"
            st.modes[label] = frozenset({Fact(TRAIN, node.lineno, what, built=True)})
            if confirmed:
                st.confirmed |= {label}
        return label

    # -- statements -------------------------------------------------------------------------

    def block(self, body: list[ast.stmt], st: State | None) -> State | None:
        for stmt in body:
            if st is None:
                return None
            self.frame.stmts.append(stmt)
            try:
                st = self.statement(stmt, st)
            finally:
                self.frame.stmts.pop()
        return st

    def statement(self, node: ast.stmt, st: State) -> State | None:
        self.budget -= 1
        if self.budget < 0:
            raise TooComplex
        handler = getattr(self, f"stmt_{type(node).__name__}", None)
        if handler is not None:
            return handler(node, st)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.ev(child, st)
        return st

    def stmt_Expr(self, node, st):
        self.ev(node.value, st)
        return st

    def stmt_Assign(self, node, st):
        if (isinstance(node.value, (ast.Tuple, ast.List)) and len(node.targets) == 1
                and isinstance(node.targets[0], (ast.Tuple, ast.List))
                and len(node.targets[0].elts) == len(node.value.elts)):
            values = [self.ev(v, st) for v in node.value.elts]
            for target, labels, value in zip(node.targets[0].elts, values, node.value.elts):
                self.bind(target, labels, st, value)
            return st
        labels = self.ev(node.value, st)
        for target in node.targets:
            self.bind(target, labels, st, node.value)
        return st

    def stmt_AnnAssign(self, node, st):
        if node.value is not None:
            self.bind(node.target, self.ev(node.value, st), st, node.value)
        return st

    def stmt_AugAssign(self, node, st):
        self.ev(node.value, st)
        return st

    def bind(self, target: ast.AST, labels: frozenset, st: State, value: ast.AST | None) -> None:
        if isinstance(target, ast.Name):
            const = self.const(st, value) if value is not None else None
            self.store(st, target.id, labels, const)
        elif isinstance(target, ast.Attribute):
            parents = self.ev(target.value, st)
            for parent in parents:
                st.fields[(parent, target.attr)] = labels
            if target.attr == "training":
                st.forget_mode(parents, target.lineno, f"`{self.source(target)} = ...`")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind(element, frozenset(), st, None)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, frozenset(), st, None)
        else:
            self.ev(target, st)

    def stmt_Delete(self, node, st):
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.store(st, target.id, frozenset())
        return st

    def stmt_Import(self, node, st):
        return st

    stmt_ImportFrom = stmt_Global = stmt_Nonlocal = stmt_Pass = stmt_ClassDef = stmt_Import

    def stmt_FunctionDef(self, node, st):
        self.frame.defs[node.name] = node
        return st

    stmt_AsyncFunctionDef = stmt_FunctionDef

    def stmt_Return(self, node, st):
        frame = self.frame
        if node.value is not None:
            frame.return_labels |= self.ev(node.value, st)
        frame.returns.append(st)
        return None

    def stmt_Raise(self, node, st):
        for child in (node.exc, node.cause):
            if child is not None:
                self.ev(child, st)
        return None

    def stmt_Break(self, node, st):
        self.frame.breaks.append(st)
        return None

    def stmt_Continue(self, node, st):
        self.frame.continues.append(st)
        return None

    def stmt_Assert(self, node, st):
        self.ev(node.test, st)
        self.refine(st, node.test, True)
        return st

    def stmt_If(self, node, st):
        self.ev(node.test, st)
        then, other = st.copy(), st.copy()
        self.refine(then, node.test, True)
        self.refine(other, node.test, False)
        return self.join_branches(st, self.block(node.body, then),
                                  self.block(node.orelse, other), node.lineno)

    def stmt_Match(self, node, st):
        self.ev(node.subject, st)
        ends = [self.block(case.body, st.copy()) for case in node.cases]
        return join([st, *ends])

    def join_branches(self, before: State, a: State | None, b: State | None,
                      line: int) -> State | None:
        """Merge the two sides of an ``if``. Where one side sets a model to train and the other
        to eval, the script chooses the mode by a condition: the mode becomes unknown."""
        merged = join([a, b])
        if a is None or b is None or merged is None:
            return merged
        for label in set(a.modes) & set(b.modes):
            old = before.modes.get(label)
            fa, fb = a.modes[label], b.modes[label]
            if fa == old or fb == old:
                continue
            if (modes(fa), modes(fb)) in (({TRAIN}, {EVAL}), ({EVAL}, {TRAIN})):
                merged.modes[label] = frozenset({Fact(UNKNOWN, line, "an `if`")})
        return merged

    def refine(self, st: State, test: ast.AST, truth: bool) -> None:
        """Narrow the modes on a branch of ``if model.training:``."""
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            self.refine(st, test.operand, not truth)
        elif isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) and truth:
            for value in test.values:
                self.refine(st, value, True)
        elif isinstance(test, ast.Attribute) and test.attr == "training":
            keep = {TRAIN, UNKNOWN} if truth else {EVAL, UNKNOWN}
            for label in self._peek(st, test.value):
                facts = frozenset(f for f in st.modes.get(label, ()) if f.mode in keep)
                if facts:
                    st.modes[label] = facts

    def stmt_With(self, node, st):
        frame = self.frame
        before = st.nograd
        pending = (len(frame.returns), len(frame.breaks), len(frame.continues))
        opened = False
        for item in node.items:
            grad = self.grad_switch(item.context_expr, st)
            if grad is not None:
                for arg in item.context_expr.args:
                    self.ev(arg, st)
                if grad and not st.nograd:
                    opened = True
                st.nograd = grad
                labels = frozenset()
            else:
                labels = self.ev(item.context_expr, st)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, labels if grad is None else frozenset(), st, None)
        if opened:
            frame.nograd_withs.append(node)
        try:
            end = self.block(node.body, st)
        finally:
            if opened:
                frame.nograd_withs.pop()
        for states, start in zip((frame.returns, frame.breaks, frame.continues), pending):
            for escaped in states[start:]:
                escaped.nograd = before
        if end is not None:
            end.nograd = before
        return end

    stmt_AsyncWith = stmt_With

    def grad_switch(self, node: ast.AST, st: State) -> str | bool | None:
        """For ``torch.no_grad()`` and friends: what autograd becomes (a truthy description
        when disabled, False when enabled, None when unknown); else None with no switch."""
        name = dotted(node.func) if isinstance(node, ast.Call) else None
        if name is None or self.is_local_name(name.split(".")[0]):
            return None
        name = self.qualname(node.func)
        label = f"`{self.source(node)}`"
        if name in NO_GRAD:
            if node.args and self.const(st, node.args[0]) is False:
                return False
            return label
        if name in ENABLE_GRAD:
            return False
        if name in SET_GRAD and node.args:
            value = self.const(st, node.args[0])
            if isinstance(value, bool):
                return False if value else label
            return None
        return None

    def stmt_Try(self, node, st):
        body = self.block(node.body, st.copy())
        start = join([st, body])
        handlers = []
        for handler in node.handlers:
            entry = start.copy()
            if handler.name:
                self.store(entry, handler.name, frozenset())
            handlers.append(self.block(handler.body, entry))
        end = join([self.block(node.orelse, body) if body is not None else None, *handlers])
        if node.finalbody:
            end = self.block(node.finalbody, end if end is not None else start)
        return end

    stmt_TryStar = stmt_Try

    # -- loops ------------------------------------------------------------------------------

    def stmt_For(self, node, st):
        iterated = self.ev(node.iter, st)
        parts = self.parts_of(node.iter, st)

        def enter(state: State) -> None:
            if parts is not None:
                target = node.target
                if isinstance(target, ast.Tuple) and len(target.elts) == 2:
                    self.bind(target.elts[0], frozenset(), state, None)
                    target = target.elts[1]
                self.bind(target, parts, state, None)
            else:
                self.bind(node.target, iterated, state, None)

        return self.loop(node, st, enter, infinite=False)

    stmt_AsyncFor = stmt_For

    def parts_of(self, node: ast.AST, st: State) -> frozenset | None:
        """What a loop variable may be: the elements of a literal list of models, or some of
        the layers of ``model.modules()``."""
        if isinstance(node, (ast.List, ast.Tuple)):
            return frozenset().union(*(self._peek(st, e) for e in node.elts))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in PARTS):
            return frozenset(("part", lb) for lb in self._peek(st, node.func.value))
        return None

    def stmt_While(self, node, st):
        self.ev(node.test, st)
        infinite = isinstance(node.test, ast.Constant) and bool(node.test.value)
        return self.loop(node, st, lambda state: self.ev(node.test, state), infinite)

    def loop(self, node, st: State, enter, infinite: bool) -> State | None:
        frame = self.frame
        saved = frame.breaks, frame.continues
        before = st.copy()
        head = st.copy()
        sink, self.sink = self.sink, {}  # passes before the state settles report nothing
        try:
            for _ in range(MAX_LOOP_PASSES):
                end, _ = self.loop_pass(node, head, enter)
                new_head = self.loop_head(before, end, node.lineno)
                if new_head == head:
                    break
                head = new_head
        finally:
            self.sink = sink
        end, breaks = self.loop_pass(node, head, enter)
        frame.breaks, frame.continues = saved
        exits = list(breaks)
        if not infinite:
            exits.append(self.block(node.orelse, head.copy()) if node.orelse else head)
        return join(exits)

    def loop_pass(self, node, head: State, enter) -> tuple[State | None, list[State]]:
        frame = self.frame
        frame.breaks, frame.continues = [], []
        state = head.copy()
        enter(state)
        frame.loops.append(node)
        frame.regions.append(self.file.calls_backward(node))
        try:
            end = self.block(node.body, state)
        finally:
            frame.loops.pop()
            frame.regions.pop()
        return join([end, *frame.continues]), frame.breaks

    def loop_head(self, before: State, end: State | None, line: int) -> State:
        """The state at the top of the loop: before it, or after a pass of its body. Modes a
        pass sets reach the next pass marked as coming from the loop."""
        if end is None:
            return before.copy()
        end = end.copy()
        for label, facts in end.modes.items():
            old = {f.key for f in before.modes.get(label, ())}
            end.modes[label] = merge_facts(
                replace(f, looped=line) if f.key not in old and f.looped is None else f
                for f in facts)
        return join([before, end])

    # -- expressions ------------------------------------------------------------------------

    def ev(self, node: ast.AST | None, st: State) -> frozenset:
        """Evaluate an expression for its effects; return the labels of its value."""
        if node is None:
            return frozenset()
        if isinstance(node, ast.Name):
            if not self.is_local_name(node.id):
                return frozenset()
            labels = self.lookup(st, node.id)
            if not labels and node.id in self.file.classes:
                return frozenset({("class", self.file.classes[node.id])})
            return labels
        if isinstance(node, ast.Attribute):
            parents = self.ev(node.value, st)
            if node.attr == "training":
                return frozenset()
            return frozenset().union(*(st.field(p, node.attr) for p in parents))
        if isinstance(node, ast.Call):
            return self.call(node, st)
        if isinstance(node, ast.NamedExpr):
            labels = self.ev(node.value, st)
            self.bind(node.target, labels, st, node.value)
            return labels
        if isinstance(node, ast.IfExp):
            self.ev(node.test, st)
            a, b = st.copy(), st.copy()
            labels = self.ev(node.body, a) | self.ev(node.orelse, b)
            st.assign(self.join_branches(st, a, b, node.lineno))
            return labels
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = st.copy()
            for generator in node.generators:
                self.ev(generator.iter, inner)
                self.bind(generator.target, frozenset(), inner, None)
                for condition in generator.ifs:
                    self.ev(condition, inner)
            for part in ("elt", "key", "value"):
                self.ev(getattr(node, part, None), inner)
            inner.envs, inner.consts = st.envs, st.consts
            st.assign(join([st, inner]))
            return frozenset()
        if isinstance(node, ast.Lambda):
            return frozenset()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.ev(child, st)
        return frozenset()

    def args(self, node: ast.Call, st: State) -> tuple[list[frozenset], dict[str, frozenset]]:
        positional = [self.ev(a, st) for a in node.args]
        keywords = {k.arg or "**": self.ev(k.value, st) for k in node.keywords}
        return positional, keywords

    def call(self, node: ast.Call, st: State) -> frozenset:
        func = node.func
        if isinstance(func, ast.Name):
            if not self.is_local_name(func.id):
                return self.external(node, self.qualname(func), st, imported=True)
            labels = self.lookup(st, func.id)
            classes = [lb[1] for lb in labels if lb[0] == "class"]
            if classes:
                return self.construct(classes[0], node, st)
            if labels:
                return self.call_object(node, labels, func, st)
            found = self.find_function(func.id)
            if found is not None:
                positional, keywords = self.args(node, st)
                return self.inline(found[0], found[1], positional, keywords, None, node, st)
            if func.id in self.file.classes:
                return self.construct(self.file.classes[func.id], node, st)
            return self.external(node, func.id, st, imported=False)
        if isinstance(func, ast.Attribute):
            root = dotted(func)
            if root is not None and not self.is_local_name(root.split(".")[0]):
                return self.external(node, self.qualname(func), st, imported=True)
            receiver = self.ev(func.value, st)
            return self.call_method(node, receiver, func, st)
        self.ev(func, st)
        positional, keywords = self.args(node, st)
        self.unknown_call(node, [*positional, *keywords.values()], st, "a call")
        return frozenset()

    def call_method(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                    st: State) -> frozenset:
        name = func.attr
        if name in SWITCHES:
            if not receiver and isinstance(func.value, ast.Name):
                receiver = frozenset({("bind", node.lineno, node.col_offset)})
                self.store(st, func.value.id, receiver)
            if receiver:
                return self.mode_call(node, receiver, func, st)
        if name == "forward" and any(lb in st.modes for lb in receiver):
            return self.call_object(node, receiver, func, st)
        for label in receiver:
            cls = label[1] if label[0] == "class" else st.cls.get(label)
            method = self.project.method(cls, name) if cls is not None else None
            if method is not None:
                positional, keywords = self.args(node, st)
                kind = {dotted(d) for d in method.node.decorator_list}
                if "staticmethod" in kind or label[0] == "class" and "classmethod" not in kind:
                    receiver = None
                return self.invoke(method, positional, keywords, receiver, node, st)
        if name not in KEEPS_MODE | QUERIES | {"apply"} and self.holds_object(st, receiver, name):
            target = frozenset().union(*(st.field(lb, name) for lb in receiver))
            return self.call_object(node, target, func, st)
        positional, keywords = self.args(node, st)
        if name in MODULE_EVIDENCE:
            st.confirmed |= {lb for lb in receiver if lb in st.modes}
        if name in KEEPS_MODE:
            return receiver
        if name in QUERIES:
            return frozenset()
        if name == "apply":
            if node.args and self.may_switch(node.args[0]):
                st.forget_mode(receiver, node.lineno, f"`{self.source(node)}`")
            return receiver
        st.forget_mode(receiver, node.lineno,
                       f"`{self.source(func)}()`, a method bnlint cannot see")
        self.unknown_call(node, [*positional, *keywords.values()], st, f"`{name}()`")
        return frozenset()

    def holds_object(self, st: State, receiver: frozenset, name: str) -> bool:
        """Whether ``receiver.name`` is an attribute holding a module or object (so
        ``receiver.name(...)`` calls it) rather than a method."""
        for parent in receiver:
            cls = st.cls.get(parent)
            if cls is not None and name in cls.attributes:
                return True
            held = st.fields.get((parent, name), frozenset())
            if any(lb in st.modes or lb in st.cls for lb in held):
                return True
        return False

    def may_switch(self, node: ast.AST) -> bool:
        """Whether a function given to ``model.apply`` may switch modes of some layers."""
        if isinstance(node, ast.Name):
            found = self.find_function(node.id)
            if found is None:
                return True
            node = found[0]
        return switches_mode(node)

    def call_object(self, node: ast.Call, labels: frozenset, func: ast.AST,
                    st: State) -> frozenset:
        for label in labels:
            cls = st.cls.get(label)
            if cls is not None and not self.project.is_module(cls):
                method = self.project.method(cls, "__call__")
                if method is not None:
                    positional, keywords = self.args(node, st)
                    return self.invoke(method, positional, keywords, labels, node, st)
        self.args(node, st)
        self.model_call(node, labels, func, st)
        return frozenset()

    def mode_call(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                  st: State) -> frozenset:
        self.args(node, st)
        st.confirmed |= {lb for lb in receiver if lb[0] != "part"}
        what = f"`{self.source(node)}`"
        if func.attr == "eval":
            st.set_mode(receiver, Fact(EVAL, node.lineno, what))
            return receiver
        argument = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        value = True if argument is None else self.const(st, argument)
        if isinstance(value, bool):
            st.set_mode(receiver, Fact(TRAIN if value else EVAL, node.lineno, what))
        elif isinstance(value, tuple):
            st.set_mode(receiver, Fact(UNKNOWN, node.lineno, what))
            for label in st.descendants(receiver):
                if label in st.modes:
                    st.modes[label] = value[1]
        else:
            st.set_mode(receiver, Fact(UNKNOWN, node.lineno, what))
        return receiver

    def construct(self, cls: ClassInfo, node: ast.Call, st: State,
                  evaluated: tuple | None = None) -> frozenset:
        """A new object of a class of the project. A module known to hold no BatchNorm is not
        followed; one of this file counts as a module as built, one of another file when it
        holds BatchNorm (else once the script uses it as a module)."""
        batchnorm = self.project.holds_batchnorm(cls) if self.project.is_module(cls) else False
        model = batchnorm is not False
        confirmed = cls.file is self.file or batchnorm is True
        label = self.new_object(st, node, model, confirmed)
        st.cls[label] = cls
        init = self.project.method(cls, "__init__")
        positional, keywords = evaluated or self.args(node, st)
        if init is not None:
            self.invoke(init, positional, keywords, frozenset({label}), node, st)
        return frozenset({label})

    def external(self, node: ast.Call, name: str | None, st: State,
                 imported: bool) -> frozenset:
        """A call of something defined outside the file, by its dotted name (``imported``:
        its root is an imported name, so the project may define it)."""
        name = name or ""
        grad = self.grad_switch(node, st)
        if name in SET_GRAD:
            self.args(node, st)
            st.nograd = grad
            return frozenset()
        positional, keywords = self.args(node, st)
        self.note_optimizer(node, name, st)
        if name in EXPORTS:
            module = positional[0] if positional else keywords.get(EXPORTS[name], frozenset())
            module_node = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == EXPORTS[name]), None)
            if not exports_in_eval_anyway(node, name, self.qualname):
                models = self.models(module, st)
                if models:
                    self.emit(INFERENCE, node, models, module_node, st, export=name)
            return self.copy(st, node, module) if name.startswith("torch.jit.") else frozenset()
        if name in WRAPPERS:
            wrapped = positional[0] if positional else frozenset()
            for label in wrapped:
                st.fields[(label, "module")] = frozenset({label})
            return wrapped
        if name in COPIES:
            return self.copy(st, node, positional[0] if positional else frozenset())
        if name in HARMLESS or name in NO_GRAD or name in ENABLE_GRAD:
            return frozenset()
        target = self.project.resolve(name, self.file) if imported else None
        if isinstance(target, ClassInfo):
            return self.construct(target, node, st, (positional, keywords))
        if isinstance(target, Function):
            receiver = frozenset({("class", target.cls)}) if target.cls is not None and any(
                isinstance(d, ast.Name) and d.id == "classmethod"
                for d in target.node.decorator_list) else None
            return self.invoke(target, positional, keywords, receiver, node, st)
        built = builds_model(name, node, self.qualname)
        if built is not None:
            label = self.new_object(st, node, True, built)
            if name.startswith("torch.nn."):
                for index, child in enumerate(positional):
                    st.fields[(label, str(index))] = child
            else:
                self.unknown_call(node, [*positional, *keywords.values()], st,
                                  f"`{self.source(node.func)}()`")
            return frozenset({label})
        self.unknown_call(node, [*positional, *keywords.values()], st,
                          f"`{self.source(node.func)}()`")
        return frozenset()

    def copy(self, st: State, node: ast.Call, source: frozenset) -> frozenset:
        """A new module in the same mode as ``source`` (a deep copy, a TorchScript module)."""
        label = ("new", node.lineno, node.col_offset)
        facts = st.facts_of(source)
        if facts:
            st.modes[label] = facts
            if source & st.confirmed:
                st.confirmed |= {label}
        return frozenset({label})

    def note_optimizer(self, node: ast.Call, name: str, st: State) -> None:
        """Remember the models whose parameters go to an optimiser (they are being trained)."""
        if name in HARMLESS:
            return
        values = [*node.args, *(k.value for k in node.keywords)]
        while values:
            value = values.pop()
            if isinstance(value, (ast.List, ast.Tuple)):
                values.extend(value.elts)
            elif isinstance(value, ast.Dict):
                values.extend(v for v in value.values if v is not None)
            elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
                  and value.func.attr in ("parameters", "named_parameters")):
                st.optimized |= self._peek(st, value.func.value)

    def unknown_call(self, node: ast.Call, values: list[frozenset], st: State, what: str) -> None:
        """A model handed to code bnlint cannot see may come back in any mode."""
        for labels in values:
            st.forget_mode(labels, node.lineno, f"{what}, which bnlint cannot see")

    # -- what is reported ---------------------------------------------------------------------

    def models(self, labels, st: State) -> list:
        """The labels among ``labels`` that are modules whose mode is followed. (A summary
        also follows its arguments: the caller knows whether they are modules.)"""
        return [lb for lb in labels if lb in st.modes and (
            lb in st.confirmed or self.summarising and argument_path(lb) is not None)]

    def model_call(self, node: ast.Call, labels: frozenset, target: ast.AST, st: State) -> None:
        """A forward pass: inference when autograd is off, a training step when a backward
        pass follows in the same loop or function."""
        models = self.models(labels, st)
        if not models:
            return
        if st.nograd:
            self.emit(INFERENCE, node, models, target, st)
        elif self.frame.training:
            self.emit(TRAINING_STEP, node, models, target, st)
        elif self.summarising:
            self.emit(FORWARD, node, models, target, st)

    def emit(self, kind: str, node: ast.Call, models: list, target: ast.AST | None, st: State,
             *, extra: frozenset = frozenset(), variable: str | None = None,
             export: str | None = None, exporter: str | None = None,
             grad: str | None = None, callee: tuple[str, str] | None = None) -> None:
        """Report a pass of ``models`` at ``node``: ``extra`` holds modes a summarised
        function may have set on some path before the pass."""
        facts = st.facts_of(models) | extra
        marked = {INFERENCE: (EVAL, "inferred"), TRAINING_STEP: (TRAIN, "trained")}.get(kind)
        if marked is not None:
            mode, mark = marked
            for label in models:
                st.modes[label] = merge_facts(
                    replace(f, **{mark: node.lineno})
                    if f.mode == mode and getattr(f, mark) is None else f
                    for f in st.modes[label])
        if variable is None and target is not None:
            variable = self.variable(target)
        shown = variable or (self.source(target) if target is not None else None)
        frame = self.frame
        helper = None
        if frame.call_line and variable and variable.split(".")[0] in frame.params:
            helper = (frame.name, frame.call_line)
        if export is not None and exporter is None:
            exporter = self.source(node.func)
        place = Place(self.file.text, frame.stmts[-1], tuple(frame.loops),
                      frame.nograd_withs[0] if frame.nograd_withs else None,
                      tuple(frame.func.body) if frame.decorated_nograd else None)
        line, col = self.file.position(node)
        use = Use(kind, line, col, facts, frozenset(models), place, variable, shown,
                  grad=(grad or st.nograd or None) if kind == INFERENCE and not export else None,
                  export=export, exporter=exporter, helper=helper, callee=callee,
                  optimized=bool(st.descendants(models) & st.optimized))
        self.sink.setdefault((kind, line, col), {})[use] = None

    def variable(self, target: ast.AST | None) -> str | None:
        if isinstance(target, ast.Attribute) and target.attr == "forward":
            target = target.value
        if target is None or dotted(target) is None:
            return None
        return self.source(target)

    # -- calls of functions -----------------------------------------------------------------

    def invoke(self, function: Function, positional: list[frozenset],
               keywords: dict[str, frozenset], receiver: frozenset | None, node: ast.Call,
               st: State) -> frozenset:
        """A call of a function of the project: analysed here when it is in this file, else
        applied through its summary."""
        if function.file is self.file:
            return self.inline(function.node, 0, positional, keywords, receiver, node, st)
        summary = self.summaries.of(function) if self.summaries is not None else None
        if summary is None:
            self.unknown_call(node, [*positional, *keywords.values(), receiver or frozenset()],
                              st, f"`{function.node.name}()`")
            return frozenset()
        return self.apply(summary, node, positional, keywords, receiver, st)

    def inline(self, func, parent: int, positional: list[frozenset],
               keywords: dict[str, frozenset], receiver: frozenset | None,
               node: ast.Call, st: State) -> frozenset:
        """Analyse a function of the file at this call, with these arguments."""
        active = [f.func for f in self.stack]
        if func in active or len(self.stack) > MAX_CALL_DEPTH:
            self.unknown_call(node, [*positional, *keywords.values()], st, f"`{func.name}()`")
            return frozenset()
        self.inlined.add(id(func))
        params = parameters(func)
        bound: dict[str, frozenset] = {}
        consts: dict = {}
        if receiver is not None and params:
            bound[params[0].arg] = receiver
            params = params[1:]
        for param, value, arg_node in zip(params, positional, node.args):
            bound[param.arg] = value
            const = self.const(st, arg_node)
            if const is not None:
                consts[param.arg] = const
        names = {p.arg for p in [*params, *func.args.kwonlyargs]}
        for keyword in node.keywords:
            if keyword.arg in names:
                bound[keyword.arg] = keywords[keyword.arg]
                const = self.const(st, keyword.value)
                if const is not None:
                    consts[keyword.arg] = const
        return self.run_function(func, parent, bound, consts, st, call=node)

    def run_function(self, func, parent: int, bound: dict, consts: dict, st: State,
                     call: ast.Call | None) -> frozenset:
        """Analyse a function body from ``st``; ``st`` becomes the state after it returns.

        Results are remembered per entry state (what the function can see of it), so a helper
        called at every pass of nested loops is analysed once per distinct state."""
        inherited = self.frame.training if call else False
        key = (id(func), inherited, parent, _frozen(bound), _frozen(consts), *st.visible(parent))
        if key not in self.memo:
            sink, self.sink = self.sink, {}
            try:
                self.memo[key] = (*self._run_function(func, parent, bound, consts, st,
                                                      call, inherited), self.sink)
            finally:
                self.sink = sink
        exit_state, returned, found = self.memo[key]
        for use_key, uses in found.items():
            into = self.sink.setdefault(use_key, {})
            for use in uses:
                into.setdefault(use)
        before = st.modes
        for index in {0, parent}:
            st.envs[index] = dict(exit_state.envs[index])
            st.consts[index] = dict(exit_state.consts[index])
        for slot in ("fields", "modes", "cls"):
            setattr(st, slot, dict(getattr(exit_state, slot)))
        st.confirmed, st.optimized = exit_state.confirmed, exit_state.optimized
        st.nograd = exit_state.nograd
        if call is not None:
            for label, facts in st.modes.items():
                old = before.get(label, frozenset())
                if facts != old:
                    st.modes[label] = merge_facts(
                        f if f in old else replace(f, via=(func.name, call.lineno))
                        for f in facts)
        return returned

    def _run_function(self, func, parent, bound, consts, st, call, inherited):
        frame = Frame(func.name, func, parent, inherited=inherited,
                      call_line=call.lineno if call else None, scope=self.file.scope(func))
        entry = st.copy()
        entry.envs.append(dict(bound))
        entry.consts.append(dict(consts))
        decorated = self.decorator_grad(func, entry)
        if decorated is not None:
            entry.nograd = decorated
            frame.decorated_nograd = bool(decorated)
        self.stack.append(frame)
        frame.regions.append(self.file.calls_backward(func))
        try:
            end = self.block(func.body, entry.copy())
        finally:
            self.stack.pop()
        exit_state = join([end, *frame.returns]) or entry
        exit_state.envs.pop()
        exit_state.consts.pop()
        if decorated is not None:
            exit_state.nograd = st.nograd
        return exit_state, frame.return_labels

    def decorator_grad(self, func, st: State) -> str | bool | None:
        for decorator in func.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else ast.Call(
                func=decorator, args=[], keywords=[])
            grad = self.grad_switch(call, st)
            if grad is not None:
                return f"a function decorated with `@{self.source(decorator)}`" if grad else False
        return None

    # -- calls of other files' functions, through their summaries ---------------------------

    def apply(self, summary, node: ast.Call, positional: list[frozenset],
              keywords: dict[str, frozenset], receiver: frozenset | None, st: State) -> frozenset:
        """What a call of a summarised function does here: its passes of the arguments (in
        the modes they have here), then the modes it leaves them in, the attributes it sets,
        and what it returns."""
        roots: dict[str, tuple[frozenset, ast.AST | None]] = {}
        params = list(summary.params)
        if receiver is not None and params:
            owner = node.func.value if isinstance(node.func, ast.Attribute) else None
            roots[params.pop(0)] = (receiver, owner)
        unplaced: list[frozenset] = []
        starred = False
        for index, (labels, arg) in enumerate(zip(positional, node.args)):
            starred = starred or isinstance(arg, ast.Starred)
            if starred or index >= len(params):
                unplaced.append(labels)
            else:
                roots[params[index]] = (labels, arg)
        for keyword in node.keywords:
            if keyword.arg in summary.names and keyword.arg not in roots:
                roots[keyword.arg] = (keywords[keyword.arg], keyword.value)
            else:
                unplaced.append(keywords[keyword.arg or "**"])
        self.unknown_call(node, unplaced, st, f"`{summary.name}()`")

        def labels_of(path: tuple[str, ...]) -> frozenset:
            labels = roots[path[0]][0] if path[0] in roots else frozenset()
            for attr in path[1:]:
                labels = frozenset().union(*(st.field(lb, attr) for lb in labels))
            return labels

        def variable(path: tuple[str, ...]) -> str | None:
            expression = roots[path[0]][1] if path[0] in roots else None
            if expression is None or dotted(expression) is None:
                return None
            return ".".join([self.source(expression), *path[1:]])

        for path in summary.confirms:
            st.confirmed |= {lb for lb in labels_of(path) if lb in st.modes}
        for use, paths in summary.effects:
            models = self.models(frozenset().union(*map(labels_of, paths)), st)
            if not models:
                continue
            kind, grad = use.kind, use.grad
            if kind == FORWARD:
                kind = INFERENCE if st.nograd else TRAINING_STEP if self.frame.training \
                    else FORWARD if self.summarising else None
                grad = st.nograd or None
            if kind is None:
                continue
            self.emit(kind, node, models, None, st, extra=self.imported(use.facts, summary, node),
                      variable=variable(paths[0]), export=use.export, exporter=use.exporter,
                      grad=grad, callee=(summary.name, summary.file))
        exits = dict(summary.exits)
        for path, facts in sorted(summary.exits, key=lambda item: len(item[0])):
            labels = labels_of(path)
            if not labels or exits.get(path[:-1]) == facts:
                continue
            new = self.imported(facts, summary, node)
            if AS_CALLED in facts:
                new |= st.facts_of(labels)
            if new:
                st.set_facts(labels, merge_facts(new))
        for path in summary.optimizes:
            st.optimized |= labels_of(path)
        for path, attr, values in summary.stores:
            value = self.values(values, labels_of, summary, node, st, (*path, attr))
            for parent in labels_of(path):
                st.fields[(parent, attr)] = value
        return self.values(summary.returns, labels_of, summary, node, st, ())

    def imported(self, facts: frozenset, summary, node: ast.Call) -> frozenset:
        """Modes a function of another file set, as seen from this call of it."""
        return frozenset(
            replace(f, via=(summary.name, node.lineno), file=f.file or summary.file,
                    looped=None, inferred=node.lineno if f.inferred else None,
                    trained=node.lineno if f.trained else None)
            for f in facts if f != AS_CALLED)

    def values(self, items, labels_of, summary, node: ast.Call, st: State,
               where: tuple) -> frozenset:
        """Labels, here, of what a summary says a function returns or stores: its arguments
        (by path), a class, or a new object (``NewObject``)."""
        out: set = set()
        for item in items:
            if isinstance(item, tuple):
                out |= labels_of(item)
            elif isinstance(item, ClassInfo):
                out.add(("class", item))
            else:
                label = ("new", node.lineno, node.col_offset, *where)
                if item.facts:
                    st.modes[label] = merge_facts(
                        st.modes.get(label, frozenset()) | self.imported(item.facts, summary,
                                                                         node))
                if item.confirmed:
                    st.confirmed |= {label}
                if item.cls is not None:
                    st.cls[label] = item.cls
                out.add(label)
        return frozenset(out)

    # -- entry points -----------------------------------------------------------------------

    def run(self) -> dict[tuple, dict[Use, None]]:
        """Every use in the file, by (kind, line, column), each key's in the order found."""
        tree = self.file.tree
        self.stack = [Frame("<module>")]
        self.frame.regions.append(self.file.calls_backward(tree))
        self.block(tree.body, State())
        called = self.file.called
        entries = [(f, None) for f in self.file.functions.values()]
        entries += [(m, c) for c in self.file.classes.values() for m in c.methods.values()]
        entries.sort(key=lambda e: e[0].lineno)
        for uncalled_only in (True, False):
            for func, cls in entries:
                if id(func) in self.inlined or (uncalled_only and func.name in called):
                    continue
                self.standalone(func, cls)
        return self.uses

    def standalone(self, func, cls: ClassInfo | None) -> None:
        """A function no analysed code calls: its parameters' modes are unknown; a method's
        ``self`` is what ``__init__`` leaves, unless other methods switch modes too."""
        self.inlined.add(id(func))
        self.stack = [Frame("<module>")]
        st = State()
        bound = {a.arg: frozenset({("param", func.name, a.arg)})
                 for a in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]}
        params = parameters(func)
        if cls is not None and params and not any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list):
            self_label = ("self", cls.name)
            bound[params[0].arg] = frozenset({self_label})
            st = self.object_state(cls, self_label, skip=func)
        self.run_function(func, 0, bound, {}, st, call=None)

    def object_state(self, cls: ClassInfo, label, skip) -> State:
        st = State()
        st.cls[label] = cls
        if self.project.is_module(cls):
            st.modes[label] = frozenset({Fact(UNKNOWN, cls.node.lineno, "the caller")})
            st.confirmed |= {label}
            return st
        init = self.project.method(cls, "__init__")
        if init is None or init.node is skip or init.file is not self.file:
            return st
        sink, self.sink = self.sink, {}
        stack, self.stack = self.stack, [Frame("<module>")]
        try:
            params = parameters(init.node)
            bound = {a.arg: frozenset({("param", init.node.name, a.arg)}) for a in params[1:]}
            bound[params[0].arg] = frozenset({label})
            self.run_function(init.node, 0, bound, {}, st, call=None)
        finally:
            self.sink, self.stack = sink, stack
        switched = any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in SWITCHES and (dotted(n.func.value) or "").split(".")[0]
            == "self" for m in cls.methods.values() if m is not init.node for n in ast.walk(m))
        if switched:
            st.forget_mode(st.descendants([label]), cls.node.lineno, "another method of the class")
        return st
