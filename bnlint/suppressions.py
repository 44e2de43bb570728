"""What silences a finding: an inline comment (``# bnlint: ignore[BN001]``, ``# noqa: BN001``,
bare ones for every rule) on its line, or ``per-file-ignores`` in ``[tool.bnlint]``; and the
record of the comments that silenced something, which BN900 reads."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bnlint.files import original_path, source_line

if TYPE_CHECKING:
    from bnlint.config import Config


# --- per-file ignores ---------------------------------------------------------------------------

def glob_regex(pattern: str) -> re.Pattern:
    """A glob as ruff reads one: ``*`` and ``**`` match any characters, ``/`` included; ``?``
    one; ``[...]`` a class (``[!...]`` its complement); ``{a,b}`` either; ``**/`` any number of
    folders, none included."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        elif char == "{" and "}" in pattern[i:]:
            end = pattern.index("}", i)
            out.append("(?:" + "|".join(map(re.escape, pattern[i + 1:end].split(","))) + ")")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


_applied: list[tuple[Path, re.Pattern, bool, set[str]]] = []  # (root, glob, absolute?, codes)


@contextmanager
def applying_per_file_ignores(settings: Config):
    """Within the block, findings in files that ``settings.per_file_ignores`` matches are
    suppressed for the codes given there, as by a comment on their line."""
    from bnlint.rules import resolve_codes

    root = settings.root.resolve()
    _applied[:] = [(root, glob_regex(pattern.removeprefix("./")), os.path.isabs(pattern),
                    resolve_codes(codes)) for pattern, codes in settings.per_file_ignores.items()]
    try:
        yield
    finally:
        _applied.clear()


def ignored_in_file(code: str, path: str | os.PathLike) -> bool:
    """Whether per-file-ignores skip ``code`` in ``path``: a glob matches the path relative to
    the project root (an absolute glob: the absolute path), or the file's name."""
    absolute = Path(os.path.realpath(original_path(path))) if _applied else None
    for root, regex, is_absolute, codes in _applied:
        whole = absolute if is_absolute else Path(os.path.relpath(absolute, root))
        if code in codes and (regex.match(whole.as_posix()) or regex.match(absolute.name)):
            return True
    return False


# --- inline suppressions ----------------------------------------------------------------------

_SUPPRESS = re.compile(
    r"#\s*(?:(?P<own>bnlint:\s*ignore)(?:\[(?P<bn>[^\]]*)\])?"
    r"|noqa(?::\s*(?P<noqa>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?)",
    re.IGNORECASE,
)
ALL = "*"


@dataclass(frozen=True)
class Directive:
    """One suppression comment: ``# bnlint: ignore[...]`` (``own``) or ``# noqa: ...``;
    ``codes`` is empty for a bare one, which silences every rule. ``col`` is 1-based."""

    own: bool
    codes: tuple[str, ...]
    col: int
    text: str


def directives(text: str) -> list[Directive]:
    """The suppression comments in a line of source."""
    found = []
    for match in _SUPPRESS.finditer(text):
        listed = match["bn"] if match["own"] else match["noqa"]
        codes = tuple(c.upper() for c in re.split(r"[,\s]+", listed or "") if c)
        found.append(Directive(bool(match["own"]), codes, match.start() + 1, match[0]))
    return found


def suppressed_codes(text: str) -> set[str]:
    """Codes a line's comment suppresses; ``{"*"}`` for a bare ``# noqa`` / ``# bnlint: ignore``."""
    return {code for d in directives(text) for code in d.codes or (ALL,)}


def is_suppressed(code: str, path: str | None, first_line: int | None, last_line: int | None,
                  used: set | None = None, bare: bool = True) -> bool:
    """Whether per-file-ignores skip ``code`` in ``path``, or a comment on any line of the span
    ``first_line..last_line`` silences it (a bare one too, unless ``bare`` is false). ``used``
    collects ``(real path, line, code or "*")`` for each comment that did."""
    if path is None or first_line is None:
        return False
    if ignored_in_file(code, path):
        return True
    for line in range(first_line, (last_line or first_line) + 1):
        codes = suppressed_codes(source_line(path, line))
        if code in codes or bare and ALL in codes:
            if used is not None:
                used.add((os.path.realpath(path), line, code if code in codes else ALL))
            return True
    return False


@dataclass
class Usage:
    """What the rules of a run did with the suppression comments: ``used`` holds ``(real
    path, line, code or "*")`` for each comment that silenced a finding (``is_suppressed``
    fills it), ``seen`` the ``(real path, line)`` pairs where the models analysed built layers."""

    used: set[tuple[str, int, str]] = field(default_factory=set)
    seen: set[tuple[str, int]] = field(default_factory=set)

    def saw(self, sites: Iterable) -> None:
        """Record the lines of ``sites``, where a model seen in full built its layers."""
        for site in sites:
            self.seen.update((site.path, line) for line in range(site.line, site.end_line + 1))
