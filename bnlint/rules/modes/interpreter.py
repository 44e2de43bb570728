"""The interpreter: walks a script in execution order over the abstract state and emits a
``Use`` for every pass of a model it can follow. What calls do is in ``calls``.

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

from bnlint.rules.modes.calls import Calls
from bnlint.rules.modes.events import Use
from bnlint.rules.modes.frames import BUDGET, MAX_LOOP_PASSES, Frame, TooComplex
from bnlint.rules.modes.parsed import ClassInfo, ParsedFile
from bnlint.rules.modes.project import Project
from bnlint.rules.modes.state import (
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
    ENABLE_GRAD,
    NO_GRAD,
    PARTS,
    SET_GRAD,
    SWITCHES,
    dotted,
    parameter_loop,
    parameters,
)


class Interpreter(Calls):
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
        # a module built by a library call, or a copy: (whether it holds BatchNorm, its kind)
        self.built: dict[tuple, tuple[bool | None, str]] = {}

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
        self.parameter_loop(node, st)

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

    def parameter_loop(self, node, st: State) -> None:
        """A loop over modules' parameters that freezes them all (``p.requires_grad = False``
        in its own body), or makes them trainable, maybe (a branch, a value bnlint cannot
        know), or writes them (an EMA update): the module is thawed."""
        owners, settings, written = parameter_loop(node)
        if not owners:
            return
        labels = frozenset().union(*(self._peek(st, owner) for owner in owners))
        values = [(self.const(st, value) if value is not None else True, top)
                  for value, top in settings]
        if written or any(value is not False or not top for value, top in values):
            st.thaw(labels)
        elif values:
            st.freeze(labels, (node.lineno, None))

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

    # -- entry points -----------------------------------------------------------------------

    def run(self) -> dict[tuple, dict[Use, None]]:
        """Every use in the file, by (kind, line, column), each key's in the order found."""
        tree = self.file.tree
        self.stack = [Frame("<module>")]
        self.frame.regions.append(self.file.calls_backward(tree))
        self.block(tree.body, State())
        entries = [(f, None) for f in self.file.functions.values()]
        entries += [(m, c) for c in self.file.classes.values() for m in c.methods.values()]
        entries.sort(key=lambda e: e[0].lineno)
        for uncalled_only in (True, False):
            for func, cls in entries:
                if id(func) in self.inlined or (uncalled_only and func.name in self.file.called):
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
