"""The findings a project has already, written down so that a run reports only new ones
(``--generate-baseline FILE``, ``--baseline FILE``).

The file is JSON meant to be reviewed in pull requests: one entry per line, one per instance of
a finding (a line that builds eight layers is eight entries), sorted. An entry names the rule,
the file (relative to the baseline's folder) and, for a model's finding, the model and the
module. Where there is no module (a script rule's finding, a functional call), it names the
function around the line and the statement on it, as written after normalising its layout. Line
numbers are never part of it, so code added above an old finding does not bring it back.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bnlint.files import parse
from bnlint.findings import Finding, Report
from bnlint.load import split_spec

FORMAT = 1
FIELDS = ("path", "code", "model", "module", "function", "statement")


class BaselineError(ValueError):
    pass


def entries(finding: Finding, folder: Path) -> list[dict]:
    """One entry per instance of ``finding``, with paths relative to ``folder``."""
    base = {"path": _relative(finding.path, folder), "code": finding.code}
    instances = finding.instances or [(finding.model, finding.module, finding.related)]
    found = []
    for model, module, _ in instances:
        entry = dict(base)
        if model:
            entry["model"] = _spec(model, folder)
        if module:
            entry["module"] = module
        else:
            entry.update(_place(finding.path, finding.line))
        found.append(entry)
    return found


def write(report: Report, path: Path) -> int:
    """Write every finding of ``report`` to ``path``; the number of entries."""
    folder = path.resolve().parent
    found = sorted((e for f in report.findings for e in entries(f, folder)), key=_key)
    lines = ",\n".join(f"    {json.dumps(e, ensure_ascii=False)}" for e in found)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{\n  "bnlint-baseline": {FORMAT},\n  "findings": ['
                    + (f"\n{lines}\n  " if found else "") + "]\n}\n", encoding="utf-8")
    return len(found)


def apply(report: Report, path: Path) -> Report:
    """``report`` without the findings the baseline at ``path`` holds: a finding is hidden when
    every instance of it has an entry (each entry hides one instance)."""
    known = _load(path)
    folder = path.resolve().parent
    kept = []
    for finding in report.findings:
        needed = Counter(_key(e) for e in entries(finding, folder))
        if all(known[key] >= count for key, count in needed.items()):
            known.subtract(needed)
        else:
            kept.append(finding)
    return replace(report, findings=kept, baselined=len(report.findings) - len(kept))


def _load(path: Path) -> Counter:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"baseline {path}: no such file; write it with "
                            f"`--generate-baseline {path}`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"baseline {path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        data = {}
    findings = data.get("findings")
    if data.get("bnlint-baseline") != FORMAT or not isinstance(findings, list) or not all(
            isinstance(e, dict) and isinstance(e.get("code"), str) for e in findings):
        raise BaselineError(f"baseline {path}: not a bnlint baseline (write one with "
                            "--generate-baseline)")
    return Counter(_key(e) for e in findings)


def _key(entry: dict) -> tuple:
    """What identifies an entry, in the order the file lists entries: by file, then rule, with
    numbers in names compared as numbers (``features.4`` before ``features.11``)."""
    return tuple(tuple(int(part) if part.isdigit() else part
                       for part in re.split(r"(\d+)", str(entry.get(name) or "")))
                 for name in FIELDS)


def _relative(path: str | None, folder: Path) -> str | None:
    if path is None:
        return None
    return Path(os.path.relpath(os.path.abspath(path), folder)).as_posix()


def _spec(model: str, folder: Path) -> str:
    """A model spec whose file is named relative to ``folder``, as the path of a finding is."""
    target, expr = split_spec(model)
    if expr is None or not target.endswith(".py"):
        return model
    return f"{_relative(target, folder)}:{expr}"


def _place(path: str | None, line: int | None) -> dict:
    """``function`` (qualified, as ``Trainer.fit``) and ``statement`` of the innermost
    statement on ``line``: its code, unparsed so that layout and comments do not count; of a
    compound statement, its header."""
    tree = parse(path) if path and line else None
    if tree is None:
        return {}
    names: list[str] = []
    node: ast.AST = tree
    while True:
        inner = next((s for s in _children(node) if _first_line(s) <= line <= s.end_lineno),
                     None)
        if inner is None:
            break
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        node = inner
    if node is tree:
        return {}
    place = {"function": ".".join(names)} if names else {}
    place["statement"] = _header(node)
    return place


def _first_line(stmt: ast.stmt) -> int:
    """Where a statement starts, its decorators included."""
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])


def _children(node: ast.AST) -> list[ast.stmt]:
    """The statements directly inside a statement (or a module), in every block of it."""
    blocks = [getattr(node, name, []) for name in ("body", "orelse", "finalbody")]
    blocks += [h.body for h in getattr(node, "handlers", [])]
    blocks += [c.body for c in getattr(node, "cases", [])]
    return [s for block in blocks if isinstance(block, list) for s in block
            if isinstance(s, ast.stmt)]


def _header(node: ast.stmt) -> str:
    if not _children(node):
        return ast.unparse(node)
    stub = copy.copy(node)
    for name in ("orelse", "finalbody", "handlers", "cases"):
        if hasattr(stub, name):
            setattr(stub, name, [])
    stub.body = [ast.Pass()]
    lines = ast.unparse(stub).splitlines()
    return " ".join(lines[:-1] if lines[-1].strip() == "pass" else lines)
