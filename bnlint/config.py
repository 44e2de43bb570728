"""Settings: ``[tool.bnlint]`` in pyproject.toml, merged with the command line, and the inline
suppression comments (``# bnlint: ignore[BN001]``, ``# noqa: BN001``)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from bnlint.source import source_line

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
    path: Path | None = None               # the pyproject.toml it came from, if any

    KEYS = ("select", "ignore", "exclude")


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a ``[tool.bnlint]`` table."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{candidate}: cannot read it: {exc}") from exc
            if "bnlint" in data.get("tool", {}):
                return candidate
    return None


def load_config(start: Path | None = None) -> Config:
    path = find_pyproject((start or Path.cwd()).resolve())
    if path is None:
        return Config()
    table = tomllib.loads(path.read_text(encoding="utf-8"))["tool"]["bnlint"]
    unknown = sorted(set(table) - set(Config.KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [tool.bnlint]: {', '.join(unknown)}"
            f" (known: {', '.join(Config.KEYS)})"
        )
    for key in Config.KEYS:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: [tool.bnlint] {key} must be a list of strings")
    return Config(
        select=table.get("select"),
        ignore=table.get("ignore", []),
        exclude=table.get("exclude", []),
        path=path,
    )


# --- inline suppressions ----------------------------------------------------------------------

_SUPPRESS = re.compile(
    r"#\s*(?:bnlint:\s*ignore(?:\[(?P<bn>[^\]]*)\])?|noqa(?::\s*(?P<noqa>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?)",
    re.IGNORECASE,
)
ALL = "*"


def suppressed_codes(text: str) -> set[str]:
    """Codes a line's comment suppresses; ``{"*"}`` for a bare ``# noqa`` / ``# bnlint: ignore``."""
    codes: set[str] = set()
    for match in _SUPPRESS.finditer(text):
        listed = match["bn"] if match["bn"] is not None else match["noqa"]
        if listed is None:
            codes.add(ALL)
        else:
            codes.update(c.upper() for c in re.split(r"[,\s]+", listed) if c)
    return codes


def is_suppressed(code: str, path: str | None, first_line: int | None, last_line: int | None) -> bool:
    """Whether a comment on any line of the span ``first_line..last_line`` silences ``code``."""
    if path is None or first_line is None:
        return False
    for line in range(first_line, (last_line or first_line) + 1):
        codes = suppressed_codes(source_line(path, line))
        if ALL in codes or code in codes:
            return True
    return False
