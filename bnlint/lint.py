"""Specs -> Report: load the models and scripts the user named, run the enabled rules.

torch is imported only when there is a model to analyse, so a run over files that define no
model (the common pre-commit case) stays fast.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from bnlint import config, notebook
from bnlint.edits import read_source
from bnlint.findings import Finding, ModelResult, Report
from bnlint.load import LoadError, build, load
from bnlint.rules import GRAPH, RULES, SCRIPT, enabled_codes


def check_scripts(files: Iterable[Path], codes: set[str], on_script=None) -> list[Finding]:
    """Run the enabled script rules (static: the files are parsed, never run). A notebook is
    checked as the script of its code cells, its findings placed in their cells.
    ``on_script(path, text, tree)`` sees every file they read (the fixer gathers edits)."""
    rules = [RULES[c] for c in sorted(codes) if RULES[c].scope == SCRIPT]
    findings: list[Finding] = []
    if not rules:
        return findings
    for path in files:
        try:
            script = notebook.read(path) if notebook.is_notebook(path) else None
            text = script.text if script else read_source(path)
            tree = ast.parse(text, filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError, RecursionError, notebook.NotANotebook):
            continue  # the loader reports unreadable files
        if on_script is not None:
            on_script(path, text, tree)
        for rule in rules:
            for finding in rule.implementation().check(path, text, tree):
                if not config.is_suppressed(finding.code, str(path), finding.line, finding.line):
                    findings.append(script.place(finding) if script else finding)
    return findings


def lint_specs(specs: Iterable[str], *, select=None, ignore=None, exclude=(),
               static: bool = False, on_model=None, on_script=None) -> Report:
    """``static=True`` keeps only the script rules; whenever no graph rule is enabled, nothing
    is imported, so neither torch nor the user's packages are needed.
    ``on_model(spec, model, findings)`` sees each model while it is alive, with its unmerged
    findings, and ``on_script`` each script file read: that is how fixes are gathered."""
    # The user's code may print while it is imported, built or traced: that goes to stderr,
    # so stdout holds only bnlint's report (which may be JSON or SARIF).
    with contextlib.redirect_stdout(sys.stderr):
        findings, results = _lint(specs, select, ignore, exclude, static, on_model, on_script)
    findings.sort(key=lambda f: (f.path or "", f.cell or 0, f.line or 0, f.col or 0, f.code))
    return Report(findings=findings, models=results)


def _lint(specs, select, ignore, exclude, static, on_model, on_script):
    codes = enabled_codes(select, ignore)
    if static:
        codes = {c for c in codes if RULES[c].scope == SCRIPT}
    loaded = load(specs, exclude, import_models=any(RULES[c].scope == GRAPH for c in codes))
    results: list[ModelResult] = list(loaded.results)
    findings = check_scripts(dict.fromkeys(loaded.files), codes, on_script)
    used: set[type] = set()  # classes some analysed model contains
    if loaded.candidates:
        from bnlint.engine import analyse, merge

        model_findings: list[Finding] = []
        for candidate in loaded.candidates:
            try:
                model = build(candidate)
            except LoadError as exc:
                results.append(ModelResult(candidate.spec, "error", str(exc), detail=exc.detail))
                continue
            try:
                found, result = analyse(model, candidate.spec, codes)
                if on_model is not None:
                    on_model(candidate.spec, model, found)
            except Exception as exc:  # noqa: BLE001 - one model must not end the whole run
                results.append(ModelResult(
                    candidate.spec, "error", f"internal error while analysing: {exc!r}",
                    detail=traceback.format_exc()))
                continue
            model_findings += found
            results.append(result)
            used.update(type(m) for m in model.modules())
        findings += merge(model_findings)
    results += [r for cls, r in loaded.needs_arguments.items() if cls not in used]
    return findings, results
