"""Where the user's code built each module and called each functional op: construction sites
recorded while models are built (else read from the source of the classes holding them), and
call sites read from fx's stack traces."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import weakref
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from bnlint.files import Site, parse, source_line


@lru_cache(maxsize=1)
def _internal_dirs() -> tuple[str, ...]:
    """torch's and bnlint's own folders: frames there are never the user's code."""
    torch_spec = importlib.util.find_spec("torch")
    dirs = [Path(__file__).resolve().parent]
    if torch_spec and torch_spec.origin:
        dirs.append(Path(torch_spec.origin).resolve().parent)
    return tuple(str(d) + os.sep for d in dirs)


@lru_cache(maxsize=4096)
def _real_path(filename: str) -> str:
    """``realpath`` of a code object's file: asked for every frame walked, so cached."""
    return os.path.realpath(filename)


def is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    return not _real_path(filename).startswith(_internal_dirs())


def class_key(cls: type) -> tuple[str, str]:
    """A class as every process names it: the file of its module (or the module's name) and
    its qualified name. A file outside a package is imported under a name that differs from
    one process to the next."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return (os.path.realpath(filename) if filename else cls.__module__), cls.__qualname__


def user_function(function) -> bool:
    """Whether ``function`` (a forward, say) is defined in the user's code."""
    code = getattr(function, "__code__", None)
    return code is not None and is_user_file(code.co_filename)


# --- construction sites --------------------------------------------------------------------

_sites: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> Site
_depth = 0


@lru_cache(maxsize=4096)
def _positions(code) -> list:
    return list(code.co_positions())


def _site_of_frame(frame) -> Site:
    line = frame.f_lineno
    col = end_line = end_col = None
    positions = _positions(frame.f_code)
    index = frame.f_lasti // 2
    if 0 <= index < len(positions):
        line_, end_line, col, end_col = positions[index]
        line = line_ or line
    return Site(
        path=_real_path(frame.f_code.co_filename),
        line=line,
        col=(col or 0) + 1,
        end_line=end_line or line,
        end_col=(end_col or 0) + 1,
    )


def _record(module) -> None:
    """Remember the innermost user frame that built ``module``. The walk stops at bnlint's own
    frames: what lies beyond them called bnlint (the CLI, a test runner), not the model."""
    own = _internal_dirs()[0]
    frame = sys._getframe(2)
    while frame is not None:
        if _real_path(frame.f_code.co_filename).startswith(own):
            return
        if is_user_file(frame.f_code.co_filename) and frame.f_locals.get("self") is not module:
            _sites[module] = _site_of_frame(frame)
            return
        frame = frame.f_back


@contextmanager
def recording():
    """Remember where every module built inside the block was constructed."""
    from torch import nn

    global _depth
    original = nn.Module.__init__
    if _depth == 0:
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if self not in _sites:
                _record(self)

        nn.Module.__init__ = __init__
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            nn.Module.__init__ = original


def recorded_site(module) -> Site | None:
    """Where ``module`` was constructed, if it was built inside ``recording()``."""
    return _sites.get(module)


def built_by_call(model) -> dict[Site, list[tuple[str, object]]]:
    """Each recorded call site in ``model``, with the (qualified name, module) pairs it built."""
    built: dict[Site, list[tuple[str, object]]] = {}
    for name, module in model.named_modules():
        site = _sites.get(module)
        if site is not None:
            built.setdefault(site, []).append((name, module))
    return built


def construction_site(root, qualified_name: str) -> Site | None:
    """Where the submodule was built: recorded at construction, else read from the source of
    the classes that hold it (a model built before bnlint was asked, as ``bnlint.check`` gets
    it)."""
    module = root.get_submodule(qualified_name) if qualified_name else root
    if module in _sites:
        return _sites[module]
    parts = qualified_name.split(".") if qualified_name else []
    # from the innermost holder outwards: the first of the user's classes that shows it
    try:
        for depth in range(len(parts) - 1, -1, -1):
            holder = root.get_submodule(".".join(parts[:depth]))
            for cls in type(holder).__mro__:
                site = _site_in_class(cls, parts[depth:], type(module).__name__)
                if site is not None:
                    return site
    except _Ambiguous:
        pass
    return None


class _Ambiguous(Exception):
    """The source builds such a module in several places and does not show which is this."""


def _site_in_class(cls: type, path: list[str], type_name: str) -> Site | None:
    """Where the source of ``cls`` builds the submodule at ``path`` below its instances, a
    module of class ``type_name``: ``self.<path[0]> = ...`` followed into ``nn.Sequential``,
    ``nn.ModuleList``, ``nn.ModuleDict`` and list arguments by the rest of ``path``, and into a
    helper of the file that makes it; else the one constructor call of ``type_name`` in the
    class, or in the functions of its file, that no other attribute takes; else the assignment
    that built the part holding it."""
    found = _class_source(cls)
    if found is None:
        return None
    filename, tree, node = found
    attributes = _attributes(node)
    top = value = attributes.get(path[0])
    for key in path[1:]:
        value = _element(value, key) if value is not None else None
    if value is not None:
        return _site_of(filename, _inside_helper(tree, node, value, type_name) or value)
    others = {id(v) for attr, v in attributes.items() if attr != path[0]}
    holder = _site_of(filename, top) if top is not None and len(path) > 1 else None
    for scope in (node, tree):
        calls = [c for c in _calls(scope, type_name, skip_classes=scope is tree)
                 if id(c) not in others]
        if len(calls) == 1:
            return _site_of(filename, calls[0])
        if calls:
            if holder is None:
                raise _Ambiguous
            break
    return holder


def _class_source(cls: type) -> tuple[str, ast.Module, ast.ClassDef] | None:
    """The user's file that defines ``cls``, parsed, and the class statement in it."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if not filename or not is_user_file(filename):
        return None
    filename = os.path.realpath(filename)
    tree = parse(filename)
    if tree is None:
        return None
    name = cls.__qualname__.rpartition(".")[2]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return filename, tree, node
    return None


def _attributes(cls_node: ast.ClassDef) -> dict[str, ast.expr]:
    """``self.<name> = <value>`` in the class (``self.a, self.b = x, y`` included): each name's
    first value."""
    found: dict[str, ast.expr] = {}
    for stmt in ast.walk(cls_node):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
        pairs = [(target, stmt.value) for target in targets]
        pairs += [pair for target in targets if isinstance(target, ast.Tuple)
                  and isinstance(stmt.value, ast.Tuple) and len(target.elts) == len(stmt.value.elts)
                  for pair in zip(target.elts, stmt.value.elts)]
        for target, value in pairs:
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                    and target.value.id == "self" and value is not None):
                found.setdefault(target.attr, value)
    return found


def _inside_helper(tree: ast.Module, cls_node: ast.ClassDef, value: ast.expr,
                   type_name: str) -> ast.Call | None:
    """For ``helper(...)`` or ``self.helper(...)`` defined in the same file: the one call of
    ``type_name`` in it, as construction is recorded (at the innermost line of the user's)."""
    if not isinstance(value, ast.Call):
        return None
    name = _callee(value)
    body = cls_node.body if isinstance(value.func, ast.Attribute) else tree.body
    helper = next((f for f in body if isinstance(f, ast.FunctionDef) and f.name == name), None)
    calls = _calls(helper, type_name, skip_classes=True) if helper else []
    return calls[0] if len(calls) == 1 else None


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _element(value: ast.expr, key: str) -> ast.expr | None:
    """The expression that gives entry ``key`` of a container built by ``value``:
    ``nn.Sequential(a, b)``, ``nn.ModuleList([a, b])``, ``[f(c) for c in ...]``,
    ``nn.ModuleDict({"k": a})``; ``None`` when the source does not show it."""
    if isinstance(value, (ast.ListComp, ast.GeneratorExp)):
        return value.elt
    if isinstance(value, (ast.List, ast.Tuple)):
        items = value.elts
    elif isinstance(value, ast.Dict):
        return next((v for k, v in zip(value.keys, value.values)
                     if isinstance(k, ast.Constant) and k.value == key), None)
    elif isinstance(value, ast.Call) and _callee(value) in ("Sequential", "ModuleList",
                                                              "ModuleDict"):
        items = value.args
        if len(items) == 1 and isinstance(items[0], (ast.List, ast.Tuple, ast.Dict,
                                                     ast.ListComp, ast.GeneratorExp)):
            return _element(items[0], key)
    else:
        return None
    if not key.isdigit() or any(isinstance(item, ast.Starred) for item in items):
        return None
    return items[int(key)] if int(key) < len(items) else None


def _calls(scope: ast.AST, type_name: str, skip_classes: bool) -> list[ast.Call]:
    """The calls of ``type_name`` (``nn.Conv2d(...)``, ``Conv2d(...)``) in ``scope``; with
    ``skip_classes``, not those inside class statements (another class builds them)."""
    found = []
    todo = [scope]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if skip_classes and isinstance(child, ast.ClassDef):
                continue
            if isinstance(child, ast.Call) and _callee(child) == type_name:
                found.append(child)
            todo.append(child)
    return found


def _site_of(filename: str, node: ast.expr) -> Site:
    return Site(filename, node.lineno, node.col_offset + 1, node.end_lineno,
                node.end_col_offset + 1)


# --- call sites of functional ops ------------------------------------------------------------

_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+)')


def call_site(stack_trace: str | None, name: str | None = None) -> Site | None:
    """The innermost user frame of an fx node's recorded stack trace.

    ``name`` (e.g. ``relu``) is looked for in that line to give the column of the call.
    """
    if not stack_trace:
        return None
    user = [m for m in _FRAME.finditer(stack_trace) if is_user_file(m["path"])]
    if not user:
        return None
    path, line = os.path.realpath(user[-1]["path"]), int(user[-1]["line"])
    text = source_line(path, line)
    col = len(text) - len(text.lstrip()) + 1
    if name and name in text:
        col = text.index(name) + 1
    return Site(path, line, col, line, len(text) + 1)


