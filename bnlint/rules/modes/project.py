"""The script's own project: the files its imports name, found and parsed without running
anything, and what its classes are (modules? holding BatchNorm?) across those files.

The project root is the nearest folder at or above the script holding ``pyproject.toml``,
``setup.py``, ``setup.cfg`` or ``.git``, else the script's folder. A dotted name is looked up
as Python would find it from the script: in the script's folder, the root and ``root/src``;
a relative import from its own package. Anything not found there (installed packages, C
extensions, dynamic imports) stays unknown.
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bnlint.files import read_source
from bnlint.rules.modes.parsed import ClassInfo, ParsedFile
from bnlint.rules.modes.vocabulary import (
    builds_model,
    dotted,
    is_module_base,
    library_batchnorm,
)

ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def _standard(name: str) -> bool:
    """A name from Python's standard library, which builds no layers."""
    return name.split(".")[0] in sys.stdlib_module_names


def project_root(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
    return folder


def search_path(script: Path) -> tuple[Path, ...]:
    """Where the script's absolute imports are found: its folder, the root, ``root/src``."""
    folder = script.resolve().parent
    root = project_root(folder)
    return tuple(dict.fromkeys(p for p in (folder, root, root / "src") if p.is_dir()))


def stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


@dataclass(frozen=True)
class Function:
    """A function of the project (a method, with ``cls``)."""

    file: ParsedFile
    node: ast.FunctionDef
    cls: ClassInfo | None = None


class Project:
    """Files found and parsed on demand, each once while it is unchanged; the facts about
    classes are kept with them."""

    def __init__(self, roots: tuple[Path, ...]):
        self.roots = roots
        self.files: dict[Path, tuple[tuple[int, int], ParsedFile | None]] = {}
        self.parses = 0  # files read and parsed, for the benchmark
        self._modules: dict[ClassInfo, bool] = {}
        self._batchnorm: dict[int, bool | None] = {}
        self._train: dict[int, str | None] = {}
        self._resolved: dict[tuple[str, Path | None], object] = {}
        self._found: dict[tuple[Path, str], tuple[Path | None, Path | None] | None] = {}

    def unchanged(self) -> bool:
        """Whether every file read so far is as it was when it was read."""
        return all(stamp(path) == seen for path, (seen, _) in self.files.items())

    def parsed(self, path: Path) -> ParsedFile | None:
        seen = stamp(path)
        if seen is None:
            return None
        if path not in self.files or self.files[path][0] != seen:
            try:
                text = read_source(path)
                parsed = ParsedFile(ast.parse(text, filename=str(path)), text, path)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
                parsed = None
            self.parses += 1
            self.files[path] = (seen, parsed)
        return self.files[path][1]

    # -- names ------------------------------------------------------------------------------

    def resolve(self, name: str, importer: ParsedFile, seen: frozenset = frozenset()):
        """What a dotted name used in ``importer`` is: a ``Function``, a ``ClassInfo``, a
        ``ParsedFile`` (a module) or None (not in the project, or not found)."""
        # an absolute name means the same in every file; a relative one depends on the file
        key = (name, importer.path if name.startswith(".") else None)
        if key not in self._resolved:
            self._resolved[key] = self._resolve(name, importer, seen)
        return self._resolved[key]

    def _resolve(self, name: str, importer: ParsedFile, seen: frozenset):
        if (name, id(importer)) in seen:
            return None
        seen |= {(name, id(importer))}
        if name.startswith("."):
            if importer.path is None:
                return None
            level = len(name) - len(name.lstrip("."))
            package = importer.path.resolve().parent
            for _ in range(level - 1):
                package = package.parent
            rest = name[level:]
            return self._lookup(None, package, rest.split(".") if rest else [], seen)
        parts = name.split(".")
        for root in self.roots:
            found = self._module(root, parts[0])
            if found is not None:
                return self._lookup(*found, parts[1:], seen)
        return None

    def _module(self, folder: Path, name: str) -> tuple[ParsedFile | None, Path | None] | None:
        """The module ``name`` in ``folder``: (its file, its folder when it is a package)."""
        key = (folder, name)
        if key not in self._found:
            self._found[key] = self._find(folder, name)
        found = self._found[key]
        return found if found is None else (self.parsed(found[0]) if found[0] else None, found[1])

    @staticmethod
    def _find(folder: Path, name: str) -> tuple[Path | None, Path | None] | None:
        package = folder / name
        if (package / "__init__.py").is_file():
            return package / "__init__.py", package
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py", None
        if package.is_dir() and name.isidentifier():
            return None, package  # a namespace package
        return None

    def _lookup(self, module: ParsedFile | None, package: Path | None, parts: list[str],
                seen: frozenset):
        if not parts:
            return module
        head, rest = parts[0], parts[1:]
        if module is not None:
            if head in module.functions:
                return None if rest else Function(module, module.functions[head])
            if head in module.classes:
                return self._member(module.classes[head], rest)
            if head in module.imports:
                target = ".".join([module.imports[head], *rest])
                return self.resolve(target, module, seen)
        if package is not None:
            found = self._module(package, head)
            if found is not None:
                return self._lookup(*found, rest, seen)
        return None

    def _member(self, cls: ClassInfo, rest: list[str]):
        """A class, or a static or class method called on the class itself."""
        if not rest:
            return cls
        method = cls.methods.get(rest[0]) if len(rest) == 1 else None
        if method is not None and any(isinstance(d, ast.Name) and d.id in (
                "staticmethod", "classmethod") for d in method.decorator_list):
            return Function(cls.file, method, cls)
        return None

    def local_or_project(self, name: str, file: ParsedFile):
        """A name as a file uses it: its own function or class, else what it imports."""
        if name in file.classes:
            return file.classes[name]
        if name in file.functions:
            return Function(file, file.functions[name])
        return self.resolve(name, file)

    # -- classes ----------------------------------------------------------------------------

    def bases(self, cls: ClassInfo) -> list[ClassInfo]:
        """The base classes of the project (the class's own file first)."""
        found = []
        for base in cls.bases:
            target = self.local_or_project(base, cls.file) if base else None
            if isinstance(target, ClassInfo) and target is not cls:
                found.append(target)
        return found

    def lineage(self, cls: ClassInfo) -> list[ClassInfo]:
        """The class and its bases in the project, nearest first."""
        found, todo = [], [cls]
        while todo:
            current = todo.pop(0)
            if all(current is not seen for seen in found):
                found.append(current)
                todo.extend(self.bases(current))
        return found

    def method(self, cls: ClassInfo, name: str) -> Function | None:
        """A method by name, looked up through the bases of the project."""
        for owner in self.lineage(cls):
            if name in owner.methods:
                return Function(owner.file, owner.methods[name], owner)
        return None

    def is_module(self, cls: ClassInfo) -> bool:
        """Whether a class is an ``nn.Module`` (a LightningModule...), through its bases."""
        if cls not in self._modules:
            self._modules[cls] = False  # while it is being answered: a cycle is no module
            self._modules[cls] = any(is_module_base(b) for b in cls.bases) or any(
                self.is_module(base) for base in self.bases(cls))
        return self._modules[cls]

    def holds_batchnorm(self, owner: ClassInfo | Function) -> bool | None:
        """Whether a class (its own layers, the classes and helpers it builds them with, its
        bases) or a function builds BatchNorm: True, False, or None when it may (it builds
        something from outside the project, or keeps a module it was given)."""
        key = id(owner.node)
        if key in self._batchnorm:
            return self._batchnorm[key]
        self._batchnorm[key] = False  # a cycle adds nothing
        answers = [self._builds_batchnorm(owner.file, owner.node)]
        if isinstance(owner, ClassInfo):
            answers += [self.holds_batchnorm(base) for base in self.bases(owner)]
            for base in owner.bases:
                if base.startswith("torchvision.models."):
                    answers.append(True)
                elif "." in base and not _standard(base) and \
                        not is_module_base(base) and \
                        not isinstance(self.local_or_project(base, owner.file), ClassInfo):
                    answers.append(None)  # a class of a library, which may hold BatchNorm
        result = True if True in answers else None if None in answers else False
        self._batchnorm[key] = result
        return result

    def attribute_batchnorm(self, cls: ClassInfo, attr: str) -> bool | None:
        """Whether the module a class keeps as ``self.<attr>`` holds BatchNorm: True when
        what the class assigns it surely does, else None."""
        for owner in self.lineage(cls):
            for method in owner.methods.values():
                for node in ast.walk(method):
                    if isinstance(node, ast.Assign) and any(
                            isinstance(t, ast.Attribute) and t.attr == attr
                            and isinstance(t.value, ast.Name) and t.value.id == "self"
                            for t in node.targets) and \
                            self._builds_batchnorm(owner.file, node.value) is True:
                        return True
        return None

    def overrides_train(self, cls: ClassInfo) -> str | None:
        """The name of a class of the project that overrides ``train()``, among the class,
        its bases and the classes it builds, if any."""
        key = id(cls.node)
        if key not in self._train:
            self._train[key] = None  # a cycle adds nothing
            found = next((owner.name for owner in self.lineage(cls) if "train" in owner.methods),
                         None)
            for node in ast.walk(cls.node) if found is None else ():
                if isinstance(node, ast.Call) and (name := cls.file.qualname(node.func)) and (
                        name in cls.file.classes
                        or dotted(node.func).split(".")[0] in cls.file.imports):
                    target = self.local_or_project(name, cls.file)
                    if isinstance(target, ClassInfo) and target is not cls and \
                            self.is_module(target):
                        found = self.overrides_train(target)
                        if found is not None:
                            break
            self._train[key] = found
        return self._train[key]

    def _builds_batchnorm(self, file: ParsedFile, owner: ast.AST) -> bool | None:
        answers: list[bool | None] = []
        for node in ast.walk(owner):
            if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
                name = file.qualname(node) or ""
                if name.startswith("torch.nn.") and "BatchNorm" in name.rsplit(".", 1)[-1]:
                    return True
            elif isinstance(node, ast.Call):
                name = file.qualname(node.func)
                if name is None:
                    continue
                target = self.local_or_project(name, file) if (
                    name in file.classes or name in file.functions
                    or dotted(node.func).split(".")[0] in file.imports) else None
                if isinstance(target, (ClassInfo, Function)):
                    answers.append(self.holds_batchnorm(target))
                elif builds_model(name, node, file.qualname) is not None and not (
                        name.startswith("torch.nn.") or _standard(name)):
                    answers.append(library_batchnorm(name, node))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    isinstance(owner, ast.ClassDef):
                answers.append(_keeps_a_parameter(node))
        return True if True in answers else None if None in answers else False


def _keeps_a_parameter(func: ast.FunctionDef) -> bool | None:
    """None when a method keeps one of its parameters as an attribute (``self.backbone =
    backbone``): the caller's module, which may hold BatchNorm; else False. A parameter with
    a default other than None is a setting, not a module."""
    args = [*func.args.posonlyargs, *func.args.args]
    defaults = dict(zip([a.arg for a in args][len(args) - len(func.args.defaults):],
                        func.args.defaults))
    defaults.update((a.arg, d) for a, d in zip(func.args.kwonlyargs, func.args.kw_defaults)
                    if d is not None)
    names = {a.arg for a in [*args[1:], *func.args.kwonlyargs]} - {
        name for name, default in defaults.items()
        if isinstance(default, ast.Constant) and default.value is not None}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and \
                node.value.id in names and any(
                    isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                    and t.value.id == "self" for t in node.targets):
            return None
    return False
