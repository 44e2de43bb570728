"""Where things are in the user's source: construction sites of modules, call sites of
functional ops, and the inline suppression comments found there."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bnlint import notebook
from bnlint.edits import read_source, split_lines



@lru_cache(maxsize=1)
def _internal_dirs() -> tuple[str, ...]:
    """torch's and bnlint's own folders: frames there are never the user's code."""
    torch_spec = importlib.util.find_spec("torch")
    dirs = [Path(__file__).resolve().parent]
    if torch_spec and torch_spec.origin:
        dirs.append(Path(torch_spec.origin).resolve().parent)
    return tuple(str(d) + os.sep for d in dirs)


@dataclass(frozen=True)
class Site:
    """A span in a source file; ``line`` is 1-based and ``col`` 1-based, as editors count."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int


def display_path(path: str | os.PathLike | None) -> str | None:
    """Paths below the working directory are shown relative to it, as other linters do."""
    if path is None:
        return None
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


@lru_cache(maxsize=4096)
def _real_path(filename: str) -> str:
    """``realpath`` of a code object's file: asked for every frame walked, so cached."""
    return os.path.realpath(filename)


def is_user_file(filename: str) -> bool:
    if filename.startswith("<"):
        return False
    return not _real_path(filename).startswith(_internal_dirs())


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
    """Where the submodule was built: recorded at construction, else found in the source of
    the parent's class (``self.<name> = ...``)."""
    module = root.get_submodule(qualified_name) if qualified_name else root
    if module in _sites:
        return _sites[module]
    parent_name, _, attr = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    for cls in type(parent).__mro__:
        site = _assignment_site(cls, attr)
        if site is not None:
            return site
    return None


def _assignment_site(cls: type, attr: str) -> Site | None:
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if not filename or not is_user_file(filename):
        return None
    tree = parse(os.path.realpath(filename))
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            for stmt in ast.walk(node):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                for target in targets:
                    if (isinstance(target, ast.Attribute) and target.attr == attr
                            and isinstance(target.value, ast.Name) and target.value.id == "self"
                            and stmt.value is not None):
                        value = stmt.value
                        return Site(os.path.realpath(filename), value.lineno, value.col_offset + 1,
                                    value.end_lineno, value.end_col_offset + 1)
    return None


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


# --- reading files -----------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _lines(path: str) -> tuple[str, ...]:
    """The file's lines as ``ast`` numbers them, without their line endings (a notebook's:
    those of the script its code cells make)."""
    try:
        text = notebook.read(path).text if notebook.is_notebook(path) else read_source(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return ()
    return tuple(line.rstrip("\r\n") for line in split_lines(text))


def source_line(path: str, line: int) -> str:
    lines = _lines(path)
    return lines[line - 1] if 0 < line <= len(lines) else ""


@lru_cache(maxsize=256)
def parse(path: str) -> ast.Module | None:
    try:
        return ast.parse("\n".join(_lines(path)), filename=path)
    except SyntaxError:
        return None


def forget_files() -> None:
    """Drop cached file contents (after bnlint itself rewrote a file)."""
    _lines.cache_clear()
    parse.cache_clear()
