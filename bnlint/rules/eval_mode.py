"""BN003 and BN004: the train/eval mode of the models a script uses, read from its source.

The script is parsed, never imported or run. An abstract interpreter walks it in execution
order and keeps, for every model object it can follow, the set of modes it may be in and where
each was set. It follows assignments and aliases (``model = Net().eval()``, ``net =
model.to(device)``), attributes (``self.model = model.eval()`` in ``__init__``), calls of
functions, classes and methods defined in the same file (evaluated at each call site with the
arguments given there), loops until their state settles, branches, ``with torch.no_grad():``
blocks and ``@torch.no_grad()`` decorators.

Precision comes first. A mode bnlint cannot know stays unknown and is never reported: a model
passed in as a parameter with no call site in the file, one handed to a function or method
defined elsewhere, one whose mode is set from a value bnlint cannot follow, or switched only in
some of its layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from bnlint import config
from bnlint.edits import Edit, apply_edits, span_of
from bnlint.findings import UNSAFE, Finding
from bnlint.rules import RULES
from bnlint.source import display_path

BN003, BN004 = "BN003", "BN004"
TRAIN, EVAL, UNKNOWN = "train", "eval", "unknown"

# --- what the names in a script mean ---------------------------------------------------------

NO_GRAD = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad",
           "torch.autograd.grad_mode.no_grad", "torch.autograd.grad_mode.inference_mode"}
ENABLE_GRAD = {"torch.enable_grad", "torch.autograd.enable_grad"}
SET_GRAD = {"torch.set_grad_enabled", "torch.autograd.set_grad_enabled"}
# export and tracing calls, with the keyword that names the module
EXPORTS = {
    "torch.jit.trace": "func", "torch.jit.trace_module": "mod", "torch.jit.script": "obj",
    "torch.onnx.export": "model", "torch.onnx.dynamo_export": "model",
    "torch.export.export": "mod",
}
# calls that return the module they are given, or a wrapper running its layers
WRAPPERS = {"torch.compile", "torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
            "torch.nn.parallel.DistributedDataParallel",
            "torch.nn.SyncBatchNorm.convert_sync_batchnorm"}
# calls that return a copy of the module, in the same mode
COPIES = {"copy.deepcopy", "torch.optim.swa_utils.AveragedModel"}
# functions that take a module and certainly leave its mode alone
HARMLESS = {"print", "len", "str", "repr", "format", "id", "type", "isinstance", "hasattr",
            "getattr", "vars", "dir", "sum", "list", "tuple", "iter", "next", "sorted",
            "enumerate", "zip", "filter", "map", "torch.save", "torch.jit.save"}
# nn.Module methods that leave the mode alone: those returning the module, then the others
KEEPS_MODE = {"to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type",
              "share_memory", "requires_grad_", "to_empty"}
QUERIES = {"parameters", "named_parameters", "buffers", "named_buffers", "children",
           "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
           "zero_grad", "register_forward_hook", "register_forward_pre_hook",
           "register_full_backward_hook", "register_buffer", "register_parameter",
           "add_module", "get_submodule", "get_parameter", "get_buffer", "compile",
           "extra_repr", "register_module", "save"}
# calls on an object that show it is a torch module
MODULE_EVIDENCE = {"load_state_dict", "parameters", "named_parameters", "state_dict",
                   "modules", "named_modules", "children", "named_children", "zero_grad",
                   "requires_grad_", "eval", "train", "cuda", "half", "bfloat16"}
PARTS = {"modules", "children", "named_modules", "named_children"}
# torch.nn containers: they hold BatchNorm if one of the layers given to them does
CONTAINERS = {"Sequential", "ModuleList", "ModuleDict"}
MODEL_BASES = {"torch.nn.Module", "pytorch_lightning.LightningModule",
               "lightning.LightningModule", "lightning.pytorch.LightningModule"}
MAX_LOOP_PASSES = 8
MAX_CALL_DEPTH = 12
# statements interpreted per script before giving up on it (and reporting nothing)
BUDGET = 200_000


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def import_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``nn`` -> ``torch.nn``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    names[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _is_backward(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "backward")


def calls_backward(body: list[ast.stmt]) -> bool:
    """Whether a block itself (not a loop or function nested in it) runs a backward pass."""
    todo = list(body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef,
                             ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if _is_backward(node):
            return True
        todo.extend(ast.iter_child_nodes(node))
    return False


def assigned_names(func: ast.AST) -> set[str]:
    """The names a function binds (its locals), as Python decides them."""
    names = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    todo = list(func.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                               ast.GeneratorExp)):
            continue
        todo.extend(ast.iter_child_nodes(node))
    declared = {n for node in ast.walk(func) if isinstance(node, (ast.Global, ast.Nonlocal))
                for n in node.names}
    return names - declared


def global_names(func: ast.AST) -> set[str]:
    return {n for node in ast.walk(func) if isinstance(node, ast.Global) for n in node.names}


# --- abstract values -----------------------------------------------------------------------

@dataclass(frozen=True)
class Fact:
    """One way a model may be in a mode: set at ``line`` by ``what``.

    ``via`` is the helper (name, call line) that set it, seen from the code running now;
    ``looped`` the line of a loop whose next pass brings it (set later in the loop body);
    ``inferred`` the line of an inference that ran in this mode, ``trained`` of a training
    step; ``built``: a new module.
    """

    mode: str
    line: int
    what: str
    via: tuple[str, int] | None = None
    looped: int | None = None
    inferred: int | None = None
    trained: int | None = None
    built: bool = False

    @property
    def key(self) -> tuple:
        return (self.mode, self.line, self.what)

    def describe(self) -> str:
        text = f"set by {self.what} at line {self.line}"
        if self.via:
            text += f", in `{self.via[0]}()` called at line {self.via[1]}"
        if self.built:
            text += "; a new module starts in training mode"
        return text


def _first(values: Iterable):
    present = [v for v in values if v is not None]
    return min(present) if present else None


def merge_facts(facts: Iterable[Fact]) -> frozenset:
    """One fact per (mode, line, what): a fact that reaches a point several ways keeps the
    smallest of each annotation, so the set of possible states stays small."""
    facts = frozenset(facts)
    if len({f.key for f in facts}) == len(facts):
        return facts
    groups: dict[tuple, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(fact.key, []).append(fact)
    return frozenset(
        group[0] if len(group) == 1 else replace(
            group[0], via=_first(f.via for f in group), looped=_first(f.looped for f in group),
            inferred=_first(f.inferred for f in group), trained=_first(f.trained for f in group))
        for group in groups.values())


class State:
    """What may be true at one point of the script.

    ``envs`` holds one name -> labels map per active frame (module first); labels name the
    objects a value may be. ``fields`` maps (label, attribute) to labels, ``modes`` a model's
    label to its possible modes. ``nograd`` is a description of what disabled autograd (truthy),
    False when it is enabled, None when unknown.
    """

    __slots__ = ("envs", "consts", "fields", "modes", "confirmed", "optimized", "cls", "nograd")

    def __init__(self):
        self.envs: list[dict] = [{}]
        self.consts: list[dict] = [{}]
        self.fields: dict = {}
        self.modes: dict = {}
        self.confirmed: frozenset = frozenset()
        self.optimized: frozenset = frozenset()
        self.cls: dict = {}
        self.nograd: str | bool | None = False

    def copy(self) -> State:
        new = State.__new__(State)
        new.envs = [dict(e) for e in self.envs]
        new.consts = [dict(c) for c in self.consts]
        new.fields = dict(self.fields)
        new.modes = dict(self.modes)
        new.confirmed, new.optimized = self.confirmed, self.optimized
        new.cls = dict(self.cls)
        new.nograd = self.nograd
        return new

    def assign(self, other: State) -> None:
        for slot in State.__slots__:
            setattr(self, slot, getattr(other, slot))

    def __eq__(self, other) -> bool:
        return all(getattr(self, s) == getattr(other, s) for s in State.__slots__)

    __hash__ = None


def _frozen(mapping: dict) -> frozenset:
    return frozenset(mapping.items())


def _frozen_state(st: State, parent: int) -> tuple:
    """The part of a state a function called from it can see: module globals, the names of
    the function it is nested in, and every object."""
    return (_frozen(st.envs[0]), _frozen(st.envs[parent]), _frozen(st.consts[0]),
            _frozen(st.consts[parent]), _frozen(st.fields), _frozen(st.modes), st.confirmed,
            st.optimized, _frozen(st.cls), st.nograd)


def _union_maps(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out[key] | value if key in out else value
    return out


def join(states: Iterable[State | None]) -> State | None:
    """The state after control flow merges: anything possible on either path."""
    live = [s for s in states if s is not None]
    if not live:
        return None
    out = live[0].copy()
    for other in live[1:]:
        out.envs = [_union_maps(a, b) for a, b in zip(out.envs, other.envs)]
        out.consts = [{k: v for k, v in a.items() if b.get(k) == v}
                      for a, b in zip(out.consts, other.consts)]
        out.fields = _union_maps(out.fields, other.fields)
        out.modes = {label: merge_facts(facts)
                     for label, facts in _union_maps(out.modes, other.modes).items()}
        out.confirmed |= other.confirmed
        out.optimized |= other.optimized
        out.cls.update(other.cls)
        if out.nograd != other.nograd:
            out.nograd = out.nograd if (out.nograd and other.nograd) else None
    return out


class TooComplex(Exception):
    """The script needs more work than ``BUDGET`` to analyse."""


@dataclass(frozen=True)
class Insertion:
    """A line of code to insert before line ``line`` (``len(lines) + 1``: at the end)."""

    line: int
    text: str


@dataclass(frozen=True)
class Problem:
    code: str
    line: int
    col: int  # 1-based, in characters
    message: str
    related: tuple[str, ...]
    fixes: tuple[tuple[Insertion, ...], ...]  # candidate fixes, best first


@dataclass
class ClassInfo:
    node: ast.ClassDef
    bases: list[str]
    methods: dict[str, ast.FunctionDef]
    attributes: set[str]


class Frame:
    """One function being analysed (or the module): what is lexical, not part of the state."""

    def __init__(self, name: str, func=None, parent: int = 0, inherited: bool = False,
                 call_line: int | None = None):
        self.name = name
        self.call_line = call_line
        self.func = func
        self.parent = parent
        self.inherited = inherited
        self.locals = assigned_names(func) if func is not None else set()
        self.params = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)} \
            if func is not None else set()
        self.globals = global_names(func) if func is not None else set()
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


# --- the interpreter -----------------------------------------------------------------------

class Analyzer:
    def __init__(self, tree: ast.Module, text: str):
        self.tree = tree
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.imports = import_names(tree)
        self.functions: dict[str, ast.FunctionDef] = {}
        self.classes: dict[str, ClassInfo] = {}
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[stmt.name] = stmt
            elif isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = self._class_info(stmt)
        self.problems: dict[tuple, Problem] = {}
        self.sink = self.problems  # where problems found now go
        self.stack: list[Frame] = []
        self.inlined: set[int] = set()
        self.memo: dict[tuple, tuple] = {}
        self.sources: dict[int, str] = {}
        self.backward: dict[int, bool] = {}
        self.budget = BUDGET

    def _class_info(self, node: ast.ClassDef) -> ClassInfo:
        methods = {s.name: s for s in node.body
                   if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
        attributes = {t.attr for t in ast.walk(node)
                      if isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store)
                      and isinstance(t.value, ast.Name) and t.value.id == "self"}
        return ClassInfo(node, [self.qualname(b) or "" for b in node.bases], methods, attributes)

    # -- names ------------------------------------------------------------------------------

    @property
    def frame(self) -> Frame:
        return self.stack[-1]

    def qualname(self, node: ast.AST) -> str | None:
        """The dotted name of an expression, its root resolved through the imports."""
        dotted = _dotted(node)
        if dotted is None:
            return None
        root, _, rest = dotted.partition(".")
        if root in self.imports:
            root = self.imports[root]
        return f"{root}.{rest}" if rest else root

    def is_local_name(self, name: str) -> bool:
        """Whether a name refers to a variable of the script rather than an import."""
        if name in self.imports:
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
            labels = self._peek(st, node.value)
            facts = frozenset().union(*(st.modes.get(lb, frozenset()) for lb in labels))
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
        if name in self.functions:
            return self.functions[name], 0
        return None

    def method(self, cls: ClassInfo, name: str, seen=None) -> ast.FunctionDef | None:
        if name in cls.methods:
            return cls.methods[name]
        seen = seen or set()
        for base in cls.bases:
            if base in self.classes and base not in seen:
                seen.add(base)
                found = self.method(self.classes[base], name, seen)
                if found is not None:
                    return found
        return None

    def is_model_class(self, cls: ClassInfo, seen=frozenset()) -> bool:
        for base in cls.bases:
            if base in MODEL_BASES or base.startswith("torch.nn.") and base[9:10].isupper():
                return True
            if base in self.classes and base not in seen:
                if self.is_model_class(self.classes[base], seen | {base}):
                    return True
        return False

    def source(self, node: ast.AST) -> str:
        """The expression as the script spells it (on one line)."""
        if id(node) not in self.sources:
            if getattr(node, "end_lineno", None) is None:
                text = ast.unparse(node)
            else:
                (first, start), (last, end) = span_of(node, self.lines)
                text = "".join(self.lines[first - 1:last])
                text = text[start: len(text) - len(self.lines[last - 1]) + end]
            self.sources[id(node)] = " ".join(text.split())
        return self.sources[id(node)]

    def calls_backward(self, owner: ast.AST) -> bool:
        if id(owner) not in self.backward:
            self.backward[id(owner)] = calls_backward(owner.body)
        return self.backward[id(owner)]

    # -- the heap ---------------------------------------------------------------------------

    def field(self, st: State, label, attr: str) -> frozenset:
        key = (label, attr)
        if key not in st.fields:
            child = ("field", label, attr)
            st.fields[key] = frozenset({child})
            if label in st.modes:
                st.modes[child] = st.modes[label]
            if label in st.confirmed:
                st.confirmed |= {child}
        return st.fields[key]

    def _peek(self, st: State, node: ast.AST) -> frozenset:
        """Labels of a name or attribute chain, without creating anything."""
        if isinstance(node, ast.Name):
            return self.lookup(st, node.id) if self.is_local_name(node.id) else frozenset()
        if isinstance(node, ast.Attribute):
            return frozenset().union(*(st.fields.get((lb, node.attr), frozenset())
                                       for lb in self._peek(st, node.value)))
        return frozenset()

    def descendants(self, st: State, labels: Iterable) -> set:
        found, todo = set(), list(labels)
        while todo:
            label = todo.pop()
            if label in found:
                continue
            found.add(label)
            todo.extend(child for (parent, _), children in st.fields.items()
                        if parent == label for child in children)
        return found

    def set_mode(self, st: State, labels: Iterable, fact: Fact) -> None:
        """``.train()``/``.eval()`` switch a module and every module inside it; switching a
        layer met while iterating over ``model.modules()`` leaves the model's mode unknown."""
        direct = []
        for label in labels:
            if label[0] == "part":
                self.set_mode(st, [label[1]], Fact(UNKNOWN, fact.line, "a switch of some layers"))
            else:
                direct.append(label)
        for label in self.descendants(st, direct):
            if label in st.modes or label in direct:
                st.modes[label] = frozenset({fact})

    def forget_mode(self, st: State, labels: Iterable, line: int, why: str) -> None:
        models = [lb for lb in labels if lb in st.modes]
        if models:
            self.set_mode(st, models, Fact(UNKNOWN, line, why))

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
                self.forget_mode(st, parents, target.lineno, f"`{self.source(target)} = ...`")
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
            modes = ({f.mode for f in fa}, {f.mode for f in fb})
            if modes in (({TRAIN}, {EVAL}), ({EVAL}, {TRAIN})):
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
        dotted = _dotted(node.func) if isinstance(node, ast.Call) else None
        if dotted is None or self.is_local_name(dotted.split(".")[0]):
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
        frame.regions.append(self.calls_backward(node))
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
            if not labels and node.id in self.classes:
                return frozenset({("class", node.id)})
            return labels
        if isinstance(node, ast.Attribute):
            parents = self.ev(node.value, st)
            if node.attr == "training":
                return frozenset()
            return frozenset().union(*(self.field(st, p, node.attr) for p in parents))
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
                return self.external(node, self.qualname(func), st)
            labels = self.lookup(st, func.id)
            classes = [lb[1] for lb in labels if lb[0] == "class"]
            if classes:
                return self.construct(self.classes[classes[0]], node, st)
            if labels:
                return self.call_object(node, labels, func, st)
            found = self.find_function(func.id)
            if found is not None:
                positional, keywords = self.args(node, st)
                return self.inline(found[0], found[1], positional, keywords, None, node, st)
            if func.id in self.classes:
                return self.construct(self.classes[func.id], node, st)
            return self.external(node, func.id, st)
        if isinstance(func, ast.Attribute):
            root = _dotted(func)
            if root is not None and not self.is_local_name(root.split(".")[0]):
                return self.external(node, self.qualname(func), st)
            receiver = self.ev(func.value, st)
            return self.call_method(node, receiver, func, st)
        self.ev(func, st)
        positional, keywords = self.args(node, st)
        self.unknown_call(node, [*positional, *keywords.values()], st, "a call")
        return frozenset()

    def call_method(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                    st: State) -> frozenset:
        name = func.attr
        if name in ("eval", "train"):
            if not receiver and isinstance(func.value, ast.Name):
                receiver = frozenset({("bind", node.lineno, node.col_offset)})
                self.store(st, func.value.id, receiver)
            if receiver:
                return self.mode_call(node, receiver, func, st)
        if name == "forward" and any(lb in st.modes for lb in receiver):
            return self.call_object(node, receiver, func, st)
        for label in receiver:
            cls = self.classes.get(label[1] if label[0] == "class" else st.cls.get(label))
            method = self.method(cls, name) if cls else None
            if method is not None:
                positional, keywords = self.args(node, st)
                kind = {_dotted(d) for d in method.decorator_list}
                if "staticmethod" in kind or label[0] == "class" and "classmethod" not in kind:
                    receiver = None
                return self.inline(method, 0, positional, keywords, receiver, node, st)
        if name not in KEEPS_MODE | QUERIES | {"apply"} and self.holds_object(st, receiver, name):
            target = frozenset().union(*(self.field(st, lb, name) for lb in receiver))
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
                self.forget_mode(st, receiver, node.lineno, f"`{self.source(node)}`")
            return receiver
        self.forget_mode(st, receiver, node.lineno,
                         f"`{self.source(func)}()`, a method bnlint cannot see")
        self.unknown_call(node, [*positional, *keywords.values()], st, f"`{name}()`")
        return frozenset()

    def holds_object(self, st: State, receiver: frozenset, name: str) -> bool:
        """Whether ``receiver.name`` is an attribute holding a module or object (so
        ``receiver.name(...)`` calls it) rather than a method."""
        for parent in receiver:
            if st.cls.get(parent) in self.classes and \
                    name in self.classes[st.cls[parent]].attributes:
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
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr in ("eval", "train")
                   or isinstance(n, ast.Attribute) and n.attr == "training"
                   and isinstance(n.ctx, ast.Store) for n in ast.walk(node))

    def call_object(self, node: ast.Call, labels: frozenset, func: ast.AST,
                    st: State) -> frozenset:
        for label in labels:
            cls = self.classes.get(st.cls.get(label))
            if cls is not None and not self.is_model_class(cls):
                method = self.method(cls, "__call__")
                if method is not None:
                    positional, keywords = self.args(node, st)
                    return self.inline(method, 0, positional, keywords, labels, node, st)
        self.args(node, st)
        self.model_call(node, labels, func, st)
        return frozenset()

    def mode_call(self, node: ast.Call, receiver: frozenset, func: ast.Attribute,
                  st: State) -> frozenset:
        positional, keywords = self.args(node, st)
        st.confirmed |= {lb for lb in receiver if lb[0] != "part"}
        what = f"`{self.source(node)}`"
        if func.attr == "eval":
            self.set_mode(st, receiver, Fact(EVAL, node.lineno, what))
            return receiver
        argument = node.args[0] if node.args else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        value = True if argument is None else self.const(st, argument)
        if isinstance(value, bool):
            self.set_mode(st, receiver, Fact(TRAIN if value else EVAL, node.lineno, what))
        elif isinstance(value, tuple):
            self.set_mode(st, receiver, Fact(UNKNOWN, node.lineno, what))
            for label in self.descendants(st, receiver):
                if label in st.modes:
                    st.modes[label] = value[1]
        else:
            self.set_mode(st, receiver, Fact(UNKNOWN, node.lineno, what))
        return receiver

    def construct(self, cls: ClassInfo, node: ast.Call, st: State) -> frozenset:
        model = self.is_model_class(cls)
        name = cls.node.name
        label = self.new_object(st, node, model, True)
        st.cls[label] = name
        init = self.method(cls, "__init__")
        positional, keywords = self.args(node, st)
        if init is not None:
            self.inline(init, 0, positional, keywords, frozenset({label}), node, st)
        return frozenset({label})

    def external(self, node: ast.Call, name: str | None, st: State) -> frozenset:
        """A call of something defined outside the script, by its dotted name."""
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
            if not self.exports_in_eval_anyway(node, name):
                self.inference(node, module, module_node, st, export=name)
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
        built = self.builds_model(name, node)
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
        facts = frozenset().union(*(st.modes.get(lb, frozenset()) for lb in source))
        if facts:
            st.modes[label] = facts
            if source & st.confirmed:
                st.confirmed |= {label}
        return frozenset({label})

    def builds_model(self, name: str, node: ast.Call) -> bool | None:
        """Whether a call builds a module that may hold BatchNorm: True (surely), False (a
        class that may be one, confirmed once the script uses it as a module), None (not)."""
        last = name.rsplit(".", 1)[-1]
        if name.startswith("torch.nn."):
            return True if self.may_hold_batchnorm(node) else None
        if name.startswith("torchvision.models."):
            lowered = name.lower()
            return None if "weight" in lowered or "list_models" in lowered else True
        if name == "timm.create_model":
            return True
        if last[:1].isupper() and "." in name and not name.startswith(("torch.", "torchvision.")):
            return False
        return None

    def may_hold_batchnorm(self, node: ast.AST) -> bool:
        """Whether a ``torch.nn`` layer, or a container of the layers written out in its call,
        may be or hold BatchNorm (anything not written out may)."""
        if isinstance(node, (ast.List, ast.Tuple)):
            return any(self.may_hold_batchnorm(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return any(self.may_hold_batchnorm(v) for v in node.values)
        name = self.qualname(node.func) if isinstance(node, ast.Call) else None
        if name is None or not name.startswith("torch.nn."):
            return True
        last = name.rsplit(".", 1)[-1]
        if "BatchNorm" in last:
            return True
        if last in CONTAINERS:
            parts = [*node.args, *(k.value for k in node.keywords)]
            return any(self.may_hold_batchnorm(p) for p in parts)
        return False

    def exports_in_eval_anyway(self, node: ast.Call, name: str) -> bool:
        """ONNX export asked for training mode explicitly, or by the TorchScript exporter
        (``dynamo=False``), which switches to eval mode by itself."""
        if name != "torch.onnx.export":
            return False
        keywords = {k.arg: k.value for k in node.keywords}
        if "training" in keywords:
            return (self.qualname(keywords["training"]) or "").endswith(".TRAINING")
        dynamo = keywords.get("dynamo")
        return isinstance(dynamo, ast.Constant) and dynamo.value is False

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
            self.forget_mode(st, labels, node.lineno, f"{what}, which bnlint cannot see")

    # -- calls of the script's own functions ------------------------------------------------

    def inline(self, func, parent: int, positional: list[frozenset],
               keywords: dict[str, frozenset], receiver: frozenset | None,
               node: ast.Call, st: State) -> frozenset:
        """Analyse a function of the script at this call, with these arguments."""
        active = [f.func for f in self.stack]
        if func in active or len(self.stack) > MAX_CALL_DEPTH:
            self.unknown_call(node, [*positional, *keywords.values()], st, f"`{func.name}()`")
            return frozenset()
        self.inlined.add(id(func))
        params = [*func.args.posonlyargs, *func.args.args]
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

    def run_function(self, func, parent: int, bound: dict, consts: dict, st: State, call: ast.Call | None) -> frozenset:
        """Analyse a function body from ``st``; ``st`` becomes the state after it returns.

        Results are remembered per entry state (what the function can see of it), so a helper
        called at every pass of nested loops is analysed once per distinct state."""
        inherited = self.frame.training if call else False
        key = (id(func), inherited, parent, _frozen(bound), _frozen(consts),
               *_frozen_state(st, parent))
        if key not in self.memo:
            sink, self.sink = self.sink, {}
            try:
                self.memo[key] = (*self._run_function(func, parent, bound, consts, st,
                                                      call, inherited), self.sink)
            finally:
                self.sink = sink
        exit_state, returned, found = self.memo[key]
        for problem_key, problem in found.items():
            self.sink.setdefault(problem_key, problem)
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
                      call_line=call.lineno if call else None)
        entry = st.copy()
        entry.envs.append(dict(bound))
        entry.consts.append(dict(consts))
        decorated = self.decorator_grad(func, entry)
        if decorated is not None:
            entry.nograd = decorated
            frame.decorated_nograd = bool(decorated)
        self.stack.append(frame)
        frame.regions.append(self.calls_backward(func))
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

    # -- the checks -------------------------------------------------------------------------

    def model_call(self, node: ast.Call, labels: frozenset, target: ast.AST, st: State) -> None:
        """A forward pass: inference when autograd is off, a training step when a backward
        pass follows in the same loop or function."""
        models = [lb for lb in labels if lb in st.modes and lb in st.confirmed]
        if not models:
            return
        if st.nograd:
            self.inference(node, labels, target, st, export=None)
        elif self.frame.training:
            self.training_step(node, models, target, st)
            for label in models:
                st.modes[label] = merge_facts(
                    replace(f, trained=node.lineno) if f.mode == TRAIN and f.trained is None
                    else f for f in st.modes[label])

    def inference(self, node: ast.Call, labels: frozenset, target: ast.AST | None,
                  st: State, export: str | None) -> None:
        models = [lb for lb in labels if lb in st.modes and lb in st.confirmed]
        facts = [f for lb in models for f in st.modes[lb]]
        for label in models:
            st.modes[label] = merge_facts(
                replace(f, inferred=node.lineno) if f.mode == EVAL and f.inferred is None else f
                for f in st.modes[label])
        # an explicit .train() that no training step followed is a deliberate pass in training
        # mode (re-estimating BatchNorm statistics, exporting a training graph)
        train = [f for f in facts if f.mode == TRAIN and (f.built or f.trained)]
        if not train or any(f.mode == UNKNOWN for f in facts):
            return
        variable = self.variable(target)
        last = max(train, key=lambda f: f.line)
        why = last.describe()
        if any(f.mode == EVAL for f in facts):
            why += "; the `.eval()` before this does not run on every path"
        shown = self.subject(variable, target)
        if export:
            where = f"is passed to `{self.source(node.func)}`"
            if export == "torch.jit.script":
                effect = "the scripted module keeps training mode for whoever loads it"
            else:
                effect = "the exported graph keeps BatchNorm in training mode"
        else:
            where = f"runs inference inside {st.nograd}"
            effect = "BatchNorm would use batch statistics and overwrite its running averages"
        frame = self.frame
        if frame.call_line and variable and variable.split(".")[0] in frame.params:
            where += f" (in `{frame.name}()`, called at line {frame.call_line})"
        call = f"`{variable}.eval()`" if variable else "`.eval()` on the model"
        message = f"{shown} {where} but may be in training mode ({why}); {effect}. Call {call} first."
        self.report(BN003, node, message, last, self.inference_fixes(variable))

    def training_step(self, node: ast.Call, models: list, target: ast.AST, st: State) -> None:
        facts = [f for lb in models for f in st.modes[lb]]
        wrong = [f for f in facts if f.mode == EVAL and (f.looped or f.inferred)]
        if not wrong or any(f.mode == UNKNOWN for f in facts):
            return
        trained = (any(f.mode == TRAIN for f in facts)
                   or any(self.descendants(st, [lb]) & st.optimized for lb in models))
        if not trained:
            return
        variable = self.variable(target)
        shown = self.subject(variable, target)
        last = max(wrong, key=lambda f: f.line)
        if last.looped:
            why = f"{last.describe()}, on the previous pass of the loop at line {last.looped}"
        else:
            why = f"{last.describe()}, for the inference at line {last.inferred}"
        call = f"`{variable}.train()`" if variable else "`.train()` on the model"
        message = (f"{shown} is trained here but may be in eval mode ({why}); BatchNorm would"
                   f" use its frozen running statistics. Call {call} at the top of the training"
                   " loop.")
        self.report(BN004, node, message, last, self.training_fixes(variable))

    def subject(self, variable: str | None, target: ast.AST | None) -> str:
        """The model as a message names it: its variable, else the expression that gives it."""
        if variable or target is not None:
            return f"`{variable or self.source(target)}`"
        return "The model"

    def variable(self, target: ast.AST | None) -> str | None:
        if isinstance(target, ast.Attribute) and target.attr == "forward":
            target = target.value
        if target is None or _dotted(target) is None:
            return None
        return self.source(target)

    def report(self, code: str, node: ast.AST, message: str, fact: Fact,
               fixes: list[tuple[Insertion, ...]]) -> None:
        start, _ = span_of(node, self.lines)
        key = (code, start[0], start[1])
        if key not in self.sink:
            related = (fact.via[0],) if fact.via else ()
            self.sink[key] = Problem(code, start[0], start[1] + 1, message, related,
                                     tuple(f for f in fixes if all(f)))

    # -- where a fix goes -------------------------------------------------------------------

    def _indent(self, stmt: ast.stmt) -> str | None:
        text = self.lines[stmt.lineno - 1]
        indent = text[: len(text) - len(text.lstrip())]
        return indent if len(indent.encode()) == stmt.col_offset else None

    def before(self, stmt: ast.stmt, code: str) -> Insertion | None:
        indent = self._indent(stmt)
        return None if indent is None else Insertion(stmt.lineno, f"{indent}{code}\n")

    def after(self, stmt: ast.stmt, code: str) -> Insertion | None:
        indent = self._indent(stmt)
        if indent is None:
            return None
        line = stmt.end_lineno + 1
        if line > len(self.lines) and not self.lines[-1].endswith("\n"):
            return Insertion(line, f"\n{indent}{code}")
        return Insertion(line, f"{indent}{code}\n")

    def top(self, body: list[ast.stmt], code: str) -> Insertion | None:
        first = body[0]
        if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            return self.after(first, code) if len(body) == 1 else self.before(body[1], code)
        return self.before(first, code)

    def inference_fixes(self, variable: str | None) -> list[tuple[Insertion, ...]]:
        if not variable:
            return []
        frame = self.frame
        eval_, train = f"{variable}.eval()", f"{variable}.train()"
        fixes = []
        if frame.nograd_withs:
            block = frame.nograd_withs[0]
            fixes += [(self.before(block, eval_),),
                      (self.before(block, eval_), self.after(block, train))]
        elif frame.decorated_nograd:
            fixes.append((self.top(frame.func.body, eval_),))
        stmt = frame.stmts[-1]
        fixes += [(self.before(stmt, eval_),), (self.before(stmt, eval_), self.after(stmt, train))]
        return fixes

    def training_fixes(self, variable: str | None) -> list[tuple[Insertion, ...]]:
        if not variable:
            return []
        frame = self.frame
        code = f"{variable}.train()"
        fixes = [(self.top(frame.loops[-1].body, code),)] if frame.loops else []
        return fixes + [(self.before(frame.stmts[-1], code),)]

    # -- entry points -----------------------------------------------------------------------

    def run(self) -> list[Problem]:
        self.stack = [Frame("<module>")]
        self.frame.regions.append(self.calls_backward(self.tree))
        self.block(self.tree.body, State())
        called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
                  for n in ast.walk(self.tree) if isinstance(n, ast.Call)
                  and isinstance(n.func, (ast.Name, ast.Attribute))}
        entries = [(f, None) for f in self.functions.values()]
        entries += [(m, c) for c in self.classes.values() for m in c.methods.values()]
        entries.sort(key=lambda e: e[0].lineno)
        for uncalled_only in (True, False):
            for func, cls in entries:
                if id(func) in self.inlined or (uncalled_only and func.name in called):
                    continue
                self.standalone(func, cls)
        return sorted(self.problems.values(), key=lambda p: (p.line, p.col, p.code))

    def standalone(self, func, cls: ClassInfo | None) -> None:
        """A function no analysed code calls: its parameters' modes are unknown; a method's
        ``self`` is what ``__init__`` leaves, unless other methods switch modes too."""
        self.inlined.add(id(func))
        self.stack = [Frame("<module>")]
        st = State()
        bound = {a.arg: frozenset({("param", func.name, a.arg)})
                 for a in [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]}
        params = [*func.args.posonlyargs, *func.args.args]
        if cls is not None and params and not any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list):
            self_label = ("self", cls.node.name)
            bound[params[0].arg] = frozenset({self_label})
            st = self.object_state(cls, self_label, skip=func)
        self.run_function(func, 0, bound, {}, st, call=None)

    def object_state(self, cls: ClassInfo, label, skip) -> State:
        st = State()
        st.cls[label] = cls.node.name
        if self.is_model_class(cls):
            st.modes[label] = frozenset({Fact(UNKNOWN, cls.node.lineno, "the caller")})
            st.confirmed |= {label}
            return st
        init = self.method(cls, "__init__")
        if init is None or init is skip:
            return st
        sink, self.sink = self.sink, {}
        stack, self.stack = self.stack, [Frame("<module>")]
        try:
            params = [*init.args.posonlyargs, *init.args.args]
            bound = {a.arg: frozenset({("param", init.name, a.arg)}) for a in params[1:]}
            bound[params[0].arg] = frozenset({label})
            self.run_function(init, 0, bound, {}, st, call=None)
        finally:
            self.sink, self.stack = sink, stack
        switched = any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr in ("eval", "train") and (_dotted(n.func.value) or "").split(".")[0]
            == "self" for m in cls.methods.values() if m is not init for n in ast.walk(m))
        if switched:
            self.forget_mode(st, self.descendants(st, [label]), cls.node.lineno,
                             "another method of the class")
        return st


# --- results -------------------------------------------------------------------------------

def _edit(lines: list[str], insertion: Insertion, path: str, code: str) -> Edit:
    if insertion.line > len(lines):
        position = (len(lines), len(lines[-1])) if lines else (1, 0)
    else:
        position = (insertion.line, 0)
    return Edit(path, position, position, insertion.text, code, UNSAFE,
                f"insert `{insertion.text.strip()}` at line {insertion.line}")


def _insert(text: str, insertions: Iterable[Insertion]) -> str:
    lines = text.splitlines(keepends=True)
    return apply_edits(text, [_edit(lines, i, "", "") for i in insertions])


def _shift(line: int, insertions: Iterable[Insertion]) -> int:
    return line + sum(i.text.count("\n") for i in insertions if i.line <= line)


def problems(text: str) -> list[Problem]:
    """Every BN003/BN004 problem in a script's source, before checking their fixes."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    try:
        return Analyzer(tree, text).run()
    except TooComplex:
        return []


def _solved(text: str, found: list[Problem], problem: Problem,
            fix: tuple[Insertion, ...]) -> list[Problem]:
    """The problems a fix removes; none unless it removes ``problem`` and adds no other."""
    after = {(p.code, p.line, p.col) for p in problems(_insert(text, fix))}
    before = {(p.code, _shift(p.line, fix), p.col): p for p in found}
    if not after <= set(before) - {(problem.code, _shift(problem.line, fix), problem.col)}:
        return []
    return [p for key, p in before.items() if key not in after]


@lru_cache(maxsize=16)
def checked(text: str) -> tuple[tuple[Problem, tuple[Insertion, ...] | None], ...]:
    """Each problem with a fix verified on the fixed source, or None. A fix that also solves
    later problems is theirs too, so one inserted line serves them all."""
    found = problems(text)
    chosen: dict[Problem, tuple[Insertion, ...]] = {}
    for problem in found:
        for fix in () if problem in chosen else problem.fixes:
            solved = _solved(text, found, problem, fix)
            if solved:
                for other in solved:
                    chosen.setdefault(other, fix)
                break
    return tuple((p, chosen.get(p)) for p in found)


def findings(path: Path, text: str, code: str) -> Iterator[Finding]:
    severity = RULES[code].severity
    for problem, fix in checked(text):
        if problem.code == code:
            yield Finding(code=code, severity=severity, message=problem.message,
                          related=problem.related, path=display_path(path), line=problem.line,
                          col=problem.col, fix=UNSAFE if fix else None)


def edits(path: Path, text: str, code: str) -> Iterator[Edit]:
    """The verified fixes of the problems not suppressed by a comment on their line."""
    lines = text.splitlines(keepends=True)
    for problem, fix in checked(text):
        if problem.code != code or not fix:
            continue
        suppressed = config.suppressed_codes(lines[problem.line - 1])
        if config.ALL in suppressed or code in suppressed:
            continue
        for insertion in fix:
            yield _edit(lines, insertion, str(path), code)
