"""Settings: ``[tool.bnlint]`` in pyproject.toml, merged with the command line. (What
``per-file-ignores`` and the inline comments silence is ``bnlint.suppressions``.)"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

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
