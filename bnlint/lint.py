"""Specs -> Report: load the models and scripts the user named, run the enabled rules.

torch is imported only when there is a model to analyse, so a run over files that define no
model (the common pre-commit case) stays fast.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import traceback
import weakref
from collections.abc import Iterable
from pathlib import Path

from bnlint import engine, notebook, source
from bnlint.files import forget_files, read_notebook, read_source
from bnlint.findings import Finding, ModelResult, Report
from bnlint.inputs import Example, resolve
from bnlint.load import LoadError, build, load, spec_path
from bnlint.rules import RULES, Scope, enabled_codes
from bnlint.suppressions import Usage


def check_scripts(files: Iterable[Path], codes: set[str], on_script=None,
                  used: set | None = None) -> list[Finding]:
    """Run the enabled script rules (static: the files are parsed, never run). A notebook is
    checked as the script of its code cells, its findings placed in their cells.
    ``on_script(path, hits)`` sees the hits of every file they read, each with the edits of
    its fix (the fixer gathers them); ``used`` collects the suppression comments that silenced
    a finding."""
    rules = [RULES[c] for c in sorted(codes) if RULES[c].scope == Scope.SCRIPT]
    findings: list[Finding] = []
    if not rules:
        return findings
    for path in files:
        try:
            script = read_notebook(path) if notebook.is_notebook(path) else None
            text = script.text if script else read_source(path)
            tree = ast.parse(text, filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError, RecursionError, notebook.NotANotebook):
            continue  # the loader reports unreadable files
        hits = engine.script_hits(rules, path, text, tree, used)
        if on_script is not None:
            on_script(path, hits)
        for rule, hit in hits:
            found = engine.finding(rule, hit, hit.anchor)
            findings.append(script.place(found) if script else found)
    return findings


def lint_specs(specs: Iterable[str], *, select=None, ignore=None, exclude=(),
               static: bool = False, on_model=None, on_script=None,
               example: Example | None = None, input_shape=None,
               weights: bool | None = None) -> Report:
    """``static=True`` drops the graph rules; whenever no graph rule is enabled, nothing
    is imported, so neither torch nor the user's packages are needed.
    ``on_model(spec, model, findings)`` sees each model while it is alive, with its unmerged
    findings, and ``on_script`` each script file read: that is how fixes are gathered.
    Models are built with their weights when ``weights`` is true (fixes and the benchmark need
    them; by default, whenever ``on_model`` is given), else on the meta device, unless their
    ``__init__`` needs tensor values.
    ``example`` and ``input_shape`` give every model's input (see ``bnlint.inputs.resolve``)."""
    if weights is None:
        weights = on_model is not None

    def prepare(candidate):
        """The candidate's model, a note on how it was built, its input. Raises LoadError."""
        model, note = build(candidate, meta=not weights)
        homes = [candidate.home] if candidate.home else []
        found = resolve(model, example, input_shape=input_shape, homes=homes, probing=False)
        return model, note, found

    forget_files()  # files read by an earlier run in this process may have changed
    # The user's code may print while it is imported, built, run or traced: that goes to
    # stderr, so stdout holds only bnlint's report (which may be JSON or SARIF).
    with contextlib.redirect_stdout(sys.stderr):
        report = _lint(specs, select, ignore, exclude, static, on_model, on_script, prepare)
    report.findings.sort(key=lambda f: (f.path or "", f.cell or 0, f.line or 0, f.col or 0,
                                        f.code))
    return report


def _lint(specs, select, ignore, exclude, static, on_model, on_script, prepare) -> Report:
    selected = codes = enabled_codes(select, ignore)
    if static:
        codes = {c for c in codes if RULES[c].scope != Scope.GRAPH}
    loaded = load(specs, exclude, import_models=any(RULES[c].scope == Scope.GRAPH for c in codes))
    results: list[ModelResult] = list(loaded.results)
    run_rules = [RULES[c] for c in sorted(codes) if RULES[c].scope == Scope.RUN]
    usage = Usage() if run_rules else None
    findings = check_scripts(loaded.files, codes, on_script, usage and usage.used)
    used: set[type] = set()  # classes some analysed model contains
    if loaded.candidates:
        model_findings: list[Finding] = []
        analysed = weakref.WeakSet()  # a factory returning a model named too is checked once
        for candidate in loaded.candidates:
            try:
                model, note, example = prepare(candidate)
            except LoadError as exc:
                results.append(ModelResult(candidate.spec, "error", str(exc), detail=exc.detail,
                                           line=exc.line))
                continue
            if model in analysed:
                continue
            analysed.add(model)
            try:
                found, result = engine.analyse(model, candidate.spec, codes, example=example,
                                        used=usage and usage.used)
                if usage and not result.opaque:
                    usage.saw(source.built_by_call(model))
                if note:
                    result.notes.append(note)
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
        findings += model_findings
    if usage:
        findings += [engine.finding(rule, hit, hit.anchor)
                     for rule, hit in engine.run_hits(run_rules, usage, loaded.files, codes)]
    findings = engine.merge(findings)
    results += [r for cls, r in loaded.needs_arguments.items() if cls not in used]
    for result in results:
        result.path = result.path or spec_path(result.spec)
    return Report(findings=findings, models=results, rules=sorted(codes),
                  warnings=_unchecked(selected, codes, loaded.files, results))


def _unchecked(selected: set[str], codes: set[str], files: list[Path],
               results: list[ModelResult]) -> list[str]:
    """Why the run checked nothing, if it did not: the user must not read silence as a pass."""
    if not selected:
        return [engine.NO_RULE]
    if not codes:
        scripts = ", ".join(c for c in RULES if RULES[c].scope == Scope.SCRIPT)
        return [f"no rule ran: --static runs only the rules that read scripts ({scripts}), "
                "and none of them is selected"]
    if any(r.status == "ok" for r in results):
        return []
    if files and any(RULES[c].scope == Scope.SCRIPT for c in codes):
        return []
    if not files and not results:
        return ["nothing was checked: no Python file was found in the paths given"]
    return ["nothing was checked: no model was analysed, and no enabled rule reads scripts"
            if files else "nothing was checked: no model was analysed"]
