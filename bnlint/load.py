"""Specs -> models, and what was skipped, and why.

A spec is one of
  ``path/to/file.py`` or a folder of them: the models the file defines (see ``find_models``);
  ``path/to/file.py:EXPR``: EXPR evaluated in that file's namespace;
  ``package.module:EXPR``: EXPR evaluated in an importable module's namespace.

Importing a file runs its top level, so a plain file is imported only when its top level
just defines things (see ``runs_code_on_import``); a script that would start work when imported
is left alone and said so. torch is imported only when a file that mentions it is imported.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bnlint.config import DEFAULT_EXCLUDE
from bnlint.findings import ModelResult
from bnlint.notebook import is_notebook
from bnlint.files import display_path, read_source

# Calls a module may make at its top level without counting as "doing work".
HARMLESS_TOP_LEVEL_CALLS = (
    "torch.manual_seed", "random.seed", "np.random.seed", "numpy.random.seed",
    "torch.set_", "torch.backends.", "warnings.", "logging.", "sys.path.", "os.environ",
    "register", "__all__",
)
# Without one of these words a file cannot define a torch model, so it is not imported.
MODEL_HINTS = ("torch", "nn.", "Module")


@dataclass
class Candidate:
    """A model that can be built: ``build()`` constructs it (recording construction sites).
    ``home`` names the module it was found in, where its example input may be defined."""

    spec: str
    build: Callable[[], object]
    home: str | None = None


@dataclass
class Loaded:
    candidates: list[Candidate] = field(default_factory=list)
    results: list[ModelResult] = field(default_factory=list)  # skipped and failed specs
    files: list[Path] = field(default_factory=list)  # every Python file named, for script rules
    # classes skipped for needing arguments; dropped from the report when a model uses them
    needs_arguments: dict[type, ModelResult] = field(default_factory=dict)


class LoadError(Exception):
    """A spec that cannot be loaded: one line for the user, the traceback for --verbose."""

    def __init__(self, message: str, detail: str | None = None, line: int | None = None):
        super().__init__(message)
        self.detail = detail
        self.line = line  # in the file the spec names, when known


# --- finding files -----------------------------------------------------------------------------

def excluded(path: Path, exclude: Iterable[str] = ()) -> bool:
    """Whether a folder search skips ``path``: its name or its path matches one of
    ``exclude`` or of the folders always skipped (names or globs)."""
    return any(fnmatch.fnmatch(path.name, pat) or fnmatch.fnmatch(path.as_posix(), pat)
               for pat in (*DEFAULT_EXCLUDE, *exclude))


def python_files(path: Path, exclude: Iterable[str] = ()) -> Iterator[Path]:
    """``path`` itself, or the .py files and notebooks below it, skipping virtualenvs, build
    output, hidden folders and anything matching ``exclude`` (names or globs)."""
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not excluded(root_path / d, exclude)
                         and not (root_path / d / "pyvenv.cfg").exists())
        for name in sorted(files):
            candidate = root_path / name
            if name.endswith((".py", ".ipynb")) and not excluded(candidate, exclude):
                yield candidate


def force_excluded(spec: str, exclude: Iterable[str] = ()) -> bool:
    """Whether a path named explicitly (or the file of a ``file.py:EXPR`` spec) is one a
    folder search would skip, by its name or a folder above it (``--force-exclude``)."""
    target, _ = split_spec(spec)
    path = Path(target)
    if not (path.exists() or target.endswith(".py")):
        return False  # package.module:EXPR
    if path.is_absolute():
        path = Path(os.path.relpath(path))
    return any(excluded(part, exclude) for part in (path, *path.parents) if part.name)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"models.py:Net(3)"`` -> ``("models.py", "Net(3)")``; a plain path -> ``(path, None)``."""
    if ":" not in spec or Path(spec).exists():
        return spec, None
    target, _, expr = spec.partition(":")
    return target, expr.strip() or None


# --- the import-safety rule --------------------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return ""


def _is_main_guard(stmt: ast.stmt) -> bool:
    test = stmt.test if isinstance(stmt, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def runs_code_on_import(tree: ast.Module) -> ast.stmt | None:
    """The first top-level statement that does work when the file is imported, if any.

    Allowed: imports, definitions, assignments, docstrings, ``if __name__ == "__main__":``,
    ``if``/``try`` blocks made only of those (optional imports), and a few set-up calls
    (seeding, warnings, logging, sys.path). Anything else — a loop, a ``with`` block, a bare
    call like ``main()`` or ``train(model)`` — marks the file as a script.
    """
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Pass)):
            continue
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Constant):
                continue
            if isinstance(stmt.value, ast.Call) and _dotted(stmt.value).startswith(
                    HARMLESS_TOP_LEVEL_CALLS):
                continue
            return stmt
        if isinstance(stmt, ast.If):
            if _is_main_guard(stmt):
                continue
            inner = runs_code_on_import(ast.Module(body=stmt.body + stmt.orelse, type_ignores=[]))
            if inner is None:
                continue
            return inner
        if isinstance(stmt, ast.Try):
            blocks = stmt.body + stmt.orelse + stmt.finalbody
            blocks += [s for h in stmt.handlers for s in h.body]
            inner = runs_code_on_import(ast.Module(body=blocks, type_ignores=[]))
            if inner is None:
                continue
            return inner
        return stmt
    return None


# --- importing ---------------------------------------------------------------------------------

@contextmanager
def _on_sys_path(folder: Path):
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        try:
            sys.path.remove(entry)
        except ValueError:
            pass


# top-level modules that the user's files imported from their own folders (name -> file): the
# only modules ever dropped from sys.modules
_SIBLINGS: dict[str, Path] = {}


def _origin(module) -> tuple[Path, Path] | None:
    """A module's file, and the folder it was imported from (a package's parent)."""
    origin = getattr(module, "__file__", None)
    if not origin:
        return None
    origin = Path(origin).resolve()
    return origin, origin.parent.parent if origin.name == "__init__.py" else origin.parent


def _note_siblings(names: set[str], searched: list[Path]) -> None:
    for name in names:
        found = _origin(sys.modules.get(name)) if "." not in name else None
        if found is not None and found[1] in searched:
            _SIBLINGS[name] = found[0]


def _forget_shadowing(searched: list[Path]) -> None:
    """Drop from ``sys.modules`` what an earlier file of the run imported from its own folder
    under a name that means another module from ``searched``: two folders that each hold a
    ``layers.py`` (or a package ``models``) and a file importing it. Each file then imports its
    own sibling, as it does when run on its own."""
    for name, origin in list(_SIBLINGS.items()):
        meant = next((found for folder in searched for found in (
            folder / f"{name}.py", folder / name / "__init__.py") if found.is_file()), None)
        if name not in sys.modules or (meant is not None and meant.resolve() != origin):
            del _SIBLINGS[name]
            for stale in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
                del sys.modules[stale]


def _import_file(path: Path):
    """Import a file as a module (``__name__`` is not ``"__main__"``), with its folder on
    sys.path so its sibling imports work; files inside a package import as part of it."""
    from bnlint.files import original_path

    path = path.resolve()
    # text read from stdin is imported from its copy, as the module of the file it stands for
    where = Path(original_path(path)).resolve()
    package_parts = [where.stem]
    folder = where.parent
    while (folder / "__init__.py").exists():
        package_parts.insert(0, folder.name)
        folder = folder.parent
    # the working directory too, as `python -m` puts it there: projects import from their root
    searched = [where.parent, folder, Path.cwd().resolve()]  # in the order imports look
    _forget_shadowing(searched)
    before = set(sys.modules)
    try:
        return _import_from(path, where, package_parts, folder)
    finally:
        _note_siblings(set(sys.modules) - before, searched)


def _import_from(path: Path, where: Path, package_parts: list[str], folder: Path):
    from bnlint.source import recording

    with _on_sys_path(Path.cwd()), _on_sys_path(folder), _on_sys_path(where.parent), recording():
        if len(package_parts) > 1 and where == path:
            return importlib.import_module(".".join(package_parts))
        if len(package_parts) > 1:
            importlib.import_module(".".join(package_parts[:-1]))  # for its relative imports
            name = ".".join(package_parts)
        else:
            name = f"bnlint_user_{abs(hash(str(path))):x}_{path.stem}"
        if name in sys.modules and where == path:
            return sys.modules[name]
        # an explicit loader, so a script without the .py suffix imports too
        loader = importlib.machinery.SourceFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


def _failure(spec: str, what: str, exc: BaseException) -> LoadError:
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return LoadError(f"{what}: {last}", detail, _line_in(spec_path(spec), exc))


def _line_in(path: str | None, exc: BaseException) -> int | None:
    """The line of ``path`` that raised ``exc`` or called what raised it, when it did."""
    if path is None:
        return None
    real = os.path.realpath(path)
    if isinstance(exc, SyntaxError) and exc.filename and os.path.realpath(exc.filename) == real:
        return exc.lineno
    lines = [line for frame, line in traceback.walk_tb(exc.__traceback__)
             if os.path.realpath(frame.f_code.co_filename) == real]
    return lines[-1] if lines else None


# --- finding models in a namespace -----------------------------------------------------------

def _module_class():
    torch = sys.modules.get("torch")
    return torch.nn.Module if torch is not None else None


def _required_parameters(cls) -> list[str]:
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _named(namespace: dict, expr: ast.AST):
    """What the dotted name ``expr`` (``Net``, ``models.vgg.VGG``) is in ``namespace``, or None."""
    obj = namespace
    for part in _dotted(expr).split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _returns_model(func: ast.FunctionDef, namespace: dict, module_cls) -> bool:
    def is_model_class(expr: ast.AST) -> bool:
        obj = _named(namespace, expr)
        return isinstance(obj, type) and issubclass(obj, module_cls)

    if func.returns is not None and is_model_class(func.returns):
        return True
    return any(isinstance(node, ast.Return) and isinstance(node.value, ast.Call)
               and is_model_class(node.value.func) for node in ast.walk(func))


def _calls_with_literals(tree: ast.Module, namespace: dict, cls: type) -> list[str]:
    """How the file's own code builds ``cls`` with literal arguments, in source order, as
    expressions: calls ``cls(...)`` in its top-level functions (a ``test()``, a factory), its
    ``if __name__ == "__main__":`` block and its top-level statements, and
    ``partial(cls, ...)`` there, as the call it stands for."""
    def names_cls(node: ast.AST) -> bool:
        return _named(namespace, node) is cls

    found = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            continue  # a class's own code builds its parts, not a model to check
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Call):
                continue
            call = node
            if _dotted(node.func).rpartition(".")[2] == "partial" and node.args:
                call = ast.Call(node.args[0], node.args[1:], node.keywords)
            if not names_cls(call.func) or not isinstance(call.func, (ast.Name, ast.Attribute)):
                continue
            if _builds_with_literals(cls, call):
                found.append(ast.unparse(call))
    return list(dict.fromkeys(found))


def _builds_with_literals(cls: type, call: ast.Call) -> bool:
    """Whether every argument of ``call`` is a literal and together they give ``cls`` all it
    needs (a ``partial`` that fixes some keywords and leaves the rest to its caller does not)."""
    if any(k.arg is None for k in call.keywords):
        return False
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read: building it tells
        return True
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _first_that_builds(calls: list[str], namespace: dict, label: str,
                       module_name: str) -> Candidate:
    """A candidate that builds the first of ``calls`` that builds, and takes its spec."""
    candidate = Candidate(f"{label}:{calls[0]}", None, module_name)

    def build():
        for number, expr in enumerate(calls, 1):
            try:
                model = eval(compile(expr, f"<{label}:{expr}>", "eval"), namespace)  # noqa: S307
            except Exception:  # noqa: BLE001 - the file's next call may build
                if number == len(calls):
                    raise
                continue
            candidate.spec = f"{label}:{expr}"
            return model
    candidate.build = build
    return candidate


def find_models(tree: ast.Module, namespace: dict, module_name: str, label: str,
                loaded: Loaded) -> None:
    """The models a plain file offers, in source order:

    * module-level instances (``model = Net()``);
    * zero-argument functions that visibly return a model (``def resnet18(): return ResNet(...)``);
    * ``nn.Module`` subclasses defined in the file that construct with no arguments, unless an
      instance or factory above already builds that class. A class that needs arguments is
      built as the file's own code builds it with literal arguments (``VGG('VGG11')``, the
      first such call that builds); without one, it is reported as skipped, with the
      ``file.py:EXPR`` form that includes it.
    """
    module_cls = _module_class()
    if module_cls is None:
        return
    covered: set[type] = set()
    for stmt in tree.body:
        names = []
        if isinstance(stmt, ast.Assign):
            names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names = [stmt.target.id]
        for name in names:
            obj = namespace.get(name)
            if isinstance(obj, module_cls):
                covered.add(type(obj))
                loaded.candidates.append(
                    Candidate(f"{label}:{name}", lambda obj=obj: obj, module_name))
    for stmt in tree.body:
        if (isinstance(stmt, ast.FunctionDef) and not stmt.name.startswith("_")
                and callable(namespace.get(stmt.name))
                and not _required_parameters(namespace[stmt.name])
                and _returns_model(stmt, namespace, module_cls)):
            func = namespace[stmt.name]
            loaded.candidates.append(Candidate(f"{label}:{stmt.name}()", func, module_name))
            for node in ast.walk(stmt):
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
                    target = namespace.get(_dotted(node.value.func))
                    if isinstance(target, type):
                        covered.add(target)
    for stmt in tree.body:
        if not isinstance(stmt, ast.ClassDef):
            continue
        cls = namespace.get(stmt.name)
        if not (isinstance(cls, type) and issubclass(cls, module_cls)
                and cls.__module__ == module_name) or cls in covered:
            continue
        if inspect.isabstract(cls):
            continue
        required = _required_parameters(cls)
        calls = _calls_with_literals(tree, namespace, cls) if required else []
        if calls:
            loaded.candidates.append(_first_that_builds(calls, namespace, label, module_name))
            continue
        if required:
            loaded.needs_arguments[cls] = ModelResult(
                spec=f"{label}:{cls.__name__}",
                status="skipped",
                reason=(f"needs arguments ({', '.join(required)}); to check it, name it with "
                        f"its arguments: '{label}:{cls.__name__}(...)'"),
            )
            continue
        loaded.candidates.append(Candidate(f"{label}:{cls.__name__}()", cls, module_name))


# --- the entry point ---------------------------------------------------------------------------

def load(specs: Iterable[str], exclude: Iterable[str] = (), *,
         import_models: bool = True) -> Loaded:
    """The models and files the specs name. With ``import_models=False`` nothing is imported:
    only the files are collected, for the rules that read source without running it."""
    loaded = Loaded()
    seen: set[Path] = set()  # a file named twice, or also inside a folder named, is read once
    for spec in dict.fromkeys(specs):
        target, expr = split_spec(spec)
        path = Path(target)
        if expr is None:
            if not path.exists():
                loaded.results.append(ModelResult(spec, "error", f"no such file or folder: {target}"))
                continue
            for file in python_files(path, exclude):
                if file.resolve() in seen:
                    continue
                seen.add(file.resolve())
                loaded.files.append(file)
                if import_models and not is_notebook(file):
                    _load_file(file, loaded)
        elif import_models:
            _load_expression(spec, target, expr, loaded)
        elif target.endswith(".py") and path.is_file():
            loaded.files.append(path)
        else:
            loaded.results.append(ModelResult(
                spec, "skipped", "not imported: no enabled rule needs to build a model"))
    files: dict[Path, Path] = {}
    for file in loaded.files:
        files.setdefault(file.resolve(), file)
    candidates: dict[tuple, Candidate] = {}
    for candidate in loaded.candidates:
        candidates.setdefault(_identity(candidate.spec), candidate)
    loaded.files, loaded.candidates = list(files.values()), list(candidates.values())
    return loaded


def spec_path(spec: str) -> str | None:
    """The Python file a spec names (``file.py`` or ``file.py:EXPR``), if it names one."""
    target, _ = split_spec(spec)
    return target if Path(target).is_file() else None


def _identity(spec: str) -> tuple[str, str | None]:
    """What a spec builds, whichever way the file is written: ``./m.py:Net()`` is ``m.py:Net()``."""
    target, expr = split_spec(spec)
    path = spec_path(spec)
    return (os.path.realpath(path) if path else target), expr


def _load_file(path: Path, loaded: Loaded) -> None:
    label = display_path(path)
    try:
        text = read_source(path)
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        loaded.results.append(ModelResult(label, "error", f"cannot read: {exc}"))
        return
    if not any(hint in text for hint in MODEL_HINTS):
        return
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        loaded.results.append(ModelResult(
            label, "error", f"syntax error at line {exc.lineno}: {exc.msg}", line=exc.lineno))
        return
    work = runs_code_on_import(tree)
    if work is not None:
        code = ast.get_source_segment(text, work) or type(work).__name__
        code = code.splitlines()[0][:60]
        example = next((f"{stmt.name}()" for stmt in tree.body if isinstance(stmt, ast.ClassDef)
                        and any("Module" in _dotted(base) for base in stmt.bases)), "EXPR")
        loaded.results.append(ModelResult(
            label, "skipped",
            f"a script: line {work.lineno} runs `{code}` when imported, so bnlint did not "
            f"import it and checked no model in it (put that code under "
            f"`if __name__ == \"__main__\":`, or name a model: '{label}:{example}')",
        ))
        return
    try:
        module = _import_file(path)
    except BaseException as exc:  # noqa: BLE001 - the user's module may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = _failure(label, "import failed", exc)
        loaded.results.append(ModelResult(label, "error", str(error), detail=error.detail,
                                          line=error.line))
        return
    find_models(tree, vars(module), module.__name__, label, loaded)


def _import_target(target: str, loaded: Loaded | None = None):
    """The module a ``target:EXPR`` spec names: a file (added to ``loaded.files``) or an
    importable module. Raises LoadError for a missing file; anything else the import raises
    is left to the caller."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise LoadError(f"no such file: {target}")
        if loaded is not None:
            loaded.files.append(path)
        return _import_file(path)
    from bnlint.source import recording

    with _on_sys_path(Path.cwd()), recording():
        return importlib.import_module(target)


def _compile(expr: str, spec: str):
    try:
        return compile(expr, f"<{spec}>", "eval")
    except SyntaxError as exc:
        raise LoadError(f"invalid expression {expr!r}: {exc.msg}") from None


def _load_expression(spec: str, target: str, expr: str, loaded: Loaded) -> None:
    try:
        module = _import_target(target, loaded)
        code = _compile(expr, spec)
    except LoadError as exc:
        loaded.results.append(ModelResult(spec, "error", str(exc)))
        return
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        error = _failure(spec, "import failed", exc)
        loaded.results.append(ModelResult(spec, "error", str(error), detail=error.detail,
                                          line=error.line))
        return
    namespace = vars(module)
    loaded.candidates.append(
        Candidate(spec, lambda: eval(code, namespace), module.__name__))  # noqa: S307


def evaluate(spec: str):
    """The value of a ``file.py:EXPR`` or ``package.module:EXPR`` spec, evaluated as a model
    spec is. Raises LoadError, with one line for the user."""
    target, expr = split_spec(spec)
    if expr is None:
        raise LoadError("give it as file.py:EXPR or package.module:EXPR, e.g. "
                        "'torch:randn(2, 3, 32, 32)'")
    try:
        module = _import_target(target)
    except LoadError:
        raise
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _failure(spec, "import failed", exc) from None
    code = _compile(expr, spec)
    try:
        return eval(code, vars(module))  # noqa: S307
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _failure(spec, "evaluating it failed", exc) from None


def build(candidate: Candidate, *, meta: bool = False):
    """Construct a candidate's model, recording where its layers are built: ``(model, note)``.

    With ``meta=True`` the model is built under ``torch.device("meta")``: its parameters and
    buffers take no memory and no time to initialise, which is all that reading its structure
    needs. An ``__init__`` that computes on tensor values cannot run there; then the model is
    built with its weights, and ``note`` says why. One that fails for a reason of its own (the
    error does not mention the meta device) fails here, without building it again.

    Raises LoadError when construction fails or does not give an ``nn.Module``.
    """
    if meta:
        import torch

        try:
            with torch.device("meta"):
                return _construct(candidate), None
        except LoadError as exc:
            if "meta" not in str(exc).lower():
                raise
            return _construct(candidate), f"built with its weights: on the meta device, {exc}"
    return _construct(candidate), None


def _construct(candidate: Candidate):
    from torch import nn

    from bnlint.source import recording

    try:
        with recording():
            model = candidate.build()
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _failure(candidate.spec, "building the model failed", exc) from None
    if not isinstance(model, nn.Module):
        raise LoadError(f"evaluates to {type(model).__name__}, not a torch.nn.Module")
    return model
