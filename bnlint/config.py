"""Settings: ``[tool.bnlint]`` in pyproject.toml, merged with the command line, and the inline
suppression comments (``# bnlint: ignore[BN001]``, ``# noqa: BN001``) and per-file ignores that
silence findings."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from bnlint.source import original_path, source_line

DEFAULT_EXCLUDE = (
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", "__pycache__", "build", "dist",
    "site-packages", "node_modules", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".eggs",
)


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    """Every ``[tool.bnlint]`` key, with its default."""

    select: list[str] | None = None        # rule codes or prefixes; None: the default rules
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)  # extra folder/file names or globs to skip
    # glob (relative to the project root, or a file name) -> codes or prefixes ignored there
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    baseline: Path | None = None           # findings known already (see bnlint.baseline)
    path: Path | None = None               # the pyproject.toml it came from, if any

    KEYS = ("select", "ignore", "exclude", "per-file-ignores", "baseline")

    @property
    def root(self) -> Path:
        """The project root: the folder of the configuration file, else the working directory."""
        return self.path.parent if self.path else Path.cwd()


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.bnlint]`` table."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and "bnlint" in _read(candidate).get("tool", {}):
            return candidate
    return None


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc


def load_config(start: Path | None = None, file: Path | None = None) -> Config:
    """The settings of the nearest pyproject.toml at or above ``start`` (the working
    directory), or of ``file`` (``--config``), which must have a ``[tool.bnlint]`` table."""
    path = file or find_pyproject((start or Path.cwd()).resolve())
    if path is None:
        return Config()
    path = path.resolve()
    table = _read(path).get("tool", {}).get("bnlint")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: no [tool.bnlint] table")
    unknown = sorted(set(table) - set(Config.KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.bnlint]: {', '.join(unknown)}"
            f" (known: {', '.join(Config.KEYS)})"
        )
    for key in ("select", "ignore", "exclude"):
        if not _strings(table.get(key, [])):
            raise ConfigError(f"{path}: [tool.bnlint] {key} must be a list of strings")
    ignores = table.get("per-file-ignores", {})
    if not (isinstance(ignores, dict) and all(map(_strings, ignores.values()))):
        raise ConfigError(f'{path}: [tool.bnlint] per-file-ignores must be a table of globs and '
                          f'lists of rule codes, e.g. {{ "legacy/*" = ["BN001"] }}')
    for pattern, codes in ignores.items():
        from bnlint.rules import UnknownRuleError, resolve_codes

        try:
            resolve_codes(codes)
        except UnknownRuleError as exc:
            raise ConfigError(f"{path}: [tool.bnlint] per-file-ignores {pattern!r}: "
                              f"{exc}") from None
    baseline = table.get("baseline")
    if baseline is not None and not (isinstance(baseline, str) and baseline):
        raise ConfigError(f"{path}: [tool.bnlint] baseline must be a file name")
    return Config(
        select=table.get("select"),
        ignore=table.get("ignore", []),
        exclude=table.get("exclude", []),
        per_file_ignores=ignores,
        baseline=path.parent / baseline if baseline else None,
        path=path,
    )


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


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
                  used: set | None = None) -> bool:
    """Whether per-file-ignores skip ``code`` in ``path``, or a comment on any line of the span
    ``first_line..last_line`` silences it. ``used`` collects ``(real path, line, code or "*")``
    for each comment that did."""
    if path is None or first_line is None:
        return False
    if ignored_in_file(code, path):
        return True
    for line in range(first_line, (last_line or first_line) + 1):
        codes = suppressed_codes(source_line(path, line))
        if code in codes or ALL in codes:
            if used is not None:
                used.add((os.path.realpath(path), line, code if code in codes else ALL))
            return True
    return False
