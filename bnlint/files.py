"""The user's files: their text, read as Python reads it and written back byte for byte; the
lines bnlint shows and parses, cached for a run; how paths are shown; and text from stdin
standing in for the file it names.

Lines end where Python's tokenizer ends them (``\\r\\n``, ``\\r``, ``\\n``); files are read and
written with no newline translation, so a fix changes only the text it means to change.
"""

from __future__ import annotations

import ast
import os
import stat
import tempfile
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bnlint import notebook
from bnlint.edits import split_lines


@dataclass(frozen=True)
class Site:
    """A span in a source file; ``line`` is 1-based and ``col`` 1-based, as editors count."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int


def display_path(path: str | os.PathLike | None) -> str | None:
    """Paths below the working directory are shown relative to it, as other linters do; a
    copy of text read from stdin under the name it was given."""
    if path is None:
        return None
    path = original_path(path)
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


# --- text read from stdin, linted as the file it stands for --------------------------------------

_copies: dict[str, str] = {}     # real path of a temporary copy -> the path it stands for
_originals: dict[str, str] = {}  # real path of that file -> the copy


@contextmanager
def standing_in(text: bytes, original: str) -> Iterator[Path]:
    """A temporary file holding ``text`` (read from stdin), which within the block is the file
    ``original``: it is shown under that name, and reading ``original`` reads it."""
    with tempfile.TemporaryDirectory(prefix="bnlint-stdin-") as folder:
        copy = Path(folder) / Path(original).name
        copy.write_bytes(text)
        _copies[os.path.realpath(copy)] = original
        _originals[os.path.realpath(original)] = str(copy)
        forget_files()
        try:
            yield copy
        finally:
            del _copies[os.path.realpath(copy)], _originals[os.path.realpath(original)]
            forget_files()


def stand_ins() -> dict[str, str]:
    """The copies of stdin standing in for files now: copy -> the path it stands for, for a
    worker process to take up with ``standing_for``."""
    return dict(_copies)


@contextmanager
def standing_for(copies: dict[str, str]) -> Iterator[None]:
    """Within the block, in another process, each copy of ``copies`` (from ``stand_ins``)
    stands for its file as within ``standing_in``."""
    for copy, original in copies.items():
        _copies[copy] = original
        _originals[os.path.realpath(original)] = copy
    forget_files()
    try:
        yield
    finally:
        for copy, original in copies.items():
            _copies.pop(copy, None)
            _originals.pop(os.path.realpath(original), None)
        forget_files()


def original_path(path: str | os.PathLike) -> str | os.PathLike:
    """The file ``path`` stands for: the given name of a copy of stdin, else ``path`` itself."""
    return _copies.get(os.path.realpath(path), path) if _copies else path


def stand_in(path: str | os.PathLike) -> str | os.PathLike:
    """Where the text of ``path`` is read from: its copy, when stdin stands in for it."""
    return _originals.get(os.path.realpath(path), path) if _originals else path


# --- reading and writing ---------------------------------------------------------------------

def source_encoding(path: str | Path) -> str:
    """The encoding Python reads the file in: a BOM or a ``# -*- coding: ... -*-`` line, else
    UTF-8 (``utf-8-sig`` when there is a BOM, so writing the text back keeps it)."""
    with open(path, "rb") as handle:
        return tokenize.detect_encoding(handle.readline)[0]


def read_source(path: str | Path) -> str:
    """A file's text, decoded as Python decodes it, with its line endings as they are on disk."""
    with open(path, encoding=source_encoding(path), newline="") as handle:
        return handle.read()


@lru_cache(maxsize=64)
def _notebook(path: str, stamp: tuple) -> notebook.Script:
    return notebook.script_of(read_source(path))


def read_notebook(path) -> notebook.Script:
    """The script of a notebook file (raises NotANotebook, OSError)."""
    info = Path(path).stat()
    return _notebook(str(path), (info.st_mtime_ns, info.st_size))


class FileChanged(RuntimeError):
    pass


def write_atomic(path: str | Path, expected: str, new_text: str) -> None:
    """Replace the file's contents, unless it no longer holds ``expected`` (someone edited it
    since it was read). The new text goes to a temporary file beside it, then is renamed over
    it, so a crash never leaves a half-written file; the file's permissions are kept. A
    read-only file is refused, as an editor would (a rename alone would not notice)."""
    path = Path(path)
    if read_source(path) != expected:
        raise FileChanged(f"{path} changed since bnlint read it; not writing")
    mode = path.stat().st_mode
    if not mode & stat.S_IWUSR:
        raise PermissionError(f"{path} is read-only; not writing")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".bnlint")
    try:
        with os.fdopen(fd, "w", encoding=source_encoding(path), newline="") as handle:
            handle.write(new_text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- the line cache: what bnlint shows and parses of a file, read once a run ---------------------

@lru_cache(maxsize=256)
def _lines(path: str) -> tuple[str, ...]:
    """The file's lines as ``ast`` numbers them, without their line endings (a notebook's:
    those of the script its code cells make)."""
    try:
        path = stand_in(path)
        text = read_notebook(path).text if notebook.is_notebook(path) else read_source(path)
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
