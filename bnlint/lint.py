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
from dataclasses import dataclass, field
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
               weights: bool | None = None, one_per_class: bool = False,
               workers=None) -> Report:
    """``static=True`` drops the graph rules; whenever no graph rule is enabled, nothing
    is imported, so neither torch nor the user's packages are needed.
    ``on_model(spec, model, findings)`` sees each model while it is alive, with its unmerged
    findings, and ``on_script`` each script file read: that is how fixes are gathered.
    Models are built with their weights when ``weights`` is true (fixes and the benchmark need
    them; by default, whenever ``on_model`` is given), else on the meta device, unless their
    ``__init__`` needs tensor values.
    ``example`` and ``input_shape`` give every model's input (see ``bnlint.inputs.resolve``).
    ``one_per_class``: check one model of each class, the first named.
    ``workers`` (a ``bnlint.workers.Workers``) analyses the models in worker processes, each
    under a time and a memory limit; they see ``on_model`` through its ``fixer``, not
    ``on_model`` itself."""
    if weights is None:
        weights = on_model is not None
    forget_files()  # files read by an earlier run in this process may have changed
    # The user's code may print while it is imported, built, run or traced: that goes to
    # stderr, so stdout holds only bnlint's report (which may be JSON or SARIF).
    with contextlib.redirect_stdout(sys.stderr):
        report = _lint(specs, select, ignore, exclude, static, on_model, on_script,
                       preparer(example, input_shape, weights), one_per_class, workers)
    report.findings.sort(key=lambda f: (f.path or "", f.cell or 0, f.line or 0, f.col or 0,
                                        f.code))
    return report


def preparer(example: Example | None, input_shape, weights: bool):
    """``prepare(candidate)``: the candidate's model, a note on how it was built, its input.
    It raises LoadError."""
    def prepare(candidate):
        model, note = build(candidate, meta=not weights)
        homes = [candidate.home] if candidate.home else []
        found = resolve(model, example, input_shape=input_shape, homes=homes, probing=False)
        return model, note, found
    return prepare


class SameModel:
    """The one rule of which candidates are the same model, checked once: the same object
    (a model named twice, a model and the factory that returns it) or, with
    ``one_per_class``, a model of a class checked already."""

    def __init__(self, one_per_class: bool = False):
        self.one_per_class = one_per_class
        self.models = weakref.WeakSet()
        self.classes: set[type] = set()

    def seen(self, model) -> bool:
        return model in self.models

    def checked_class(self, model) -> bool:
        return self.one_per_class and type(model) in self.classes

    def add(self, model) -> None:
        self.models.add(model)
        self.classes.add(type(model))


@dataclass
class Checked:
    """What checking the candidates gives, in this process or from worker processes: a
    result for each (the same model named again has none), their findings unmerged, the
    classes (``source.class_key``) of every module analysed, and the classes skipped for
    needing arguments."""

    results: list[ModelResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    classes: set[tuple[str, str]] = field(default_factory=set)
    needs_arguments: dict[tuple[str, str], ModelResult] = field(default_factory=dict)

    def add(self, checked: Checked) -> None:
        self.results += checked.results
        self.findings += checked.findings
        self.classes |= checked.classes
        for key, result in checked.needs_arguments.items():
            self.needs_arguments.setdefault(key, result)

    def skipped_for_arguments(self) -> list[ModelResult]:
        return [r for key, r in self.needs_arguments.items() if key not in self.classes]


def check_model(candidate, codes: set[str], prepare, same: SameModel, usage=None,
                on_model=None) -> Checked:
    """Build one candidate and run the graph rules on it, unless it is a model checked
    already. The model is released on return."""
    checked = Checked()
    try:
        model, note, example = prepare(candidate)
    except LoadError as exc:
        checked.results.append(ModelResult(candidate.spec, "error", str(exc), detail=exc.detail,
                                           line=exc.line))
        return checked
    if same.seen(model):
        return checked
    if same.checked_class(model):
        checked.results.append(ModelResult(
            candidate.spec, "skipped",
            f"a {type(model).__name__} was checked already (--one-per-class)"))
        return checked
    same.add(model)
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
        checked.results.append(ModelResult(
            candidate.spec, "error", f"internal error while analysing: {exc!r}",
            detail=traceback.format_exc()))
        return checked
    checked.findings += found
    checked.results.append(result)
    checked.classes.update(source.class_key(type(m)) for m in model.modules())
    return checked


def _lint(specs, select, ignore, exclude, static, on_model, on_script, prepare, one_per_class,
          workers) -> Report:
    selected = codes = enabled_codes(select, ignore)
    if static:
        codes = {c for c in codes if RULES[c].scope != Scope.GRAPH}
    import_models = any(RULES[c].scope == Scope.GRAPH for c in codes)
    run_rules = [RULES[c] for c in sorted(codes) if RULES[c].scope == Scope.RUN]
    usage = Usage() if run_rules else None
    if workers is not None and import_models:
        loaded = load(specs, exclude, import_models=False)  # the files, for the script rules
        units = workers.units(specs, exclude)
        results = [r for r in loaded.results if r.spec not in units]
        findings = check_scripts(loaded.files, codes, on_script, usage and usage.used)
        checked = workers.check(units, codes, usage, exclude, one_per_class, findings)
    else:
        loaded = load(specs, exclude, import_models=import_models)
        results = list(loaded.results)
        findings = check_scripts(loaded.files, codes, on_script, usage and usage.used)
        checked = Checked(needs_arguments={source.class_key(cls): result for cls, result
                                           in loaded.needs_arguments.items()})
        same = SameModel(one_per_class)
        for candidate in loaded.candidates:
            checked.add(check_model(candidate, codes, prepare, same, usage, on_model))
    results += checked.results
    findings += checked.findings
    if usage:
        findings += [engine.finding(rule, hit, hit.anchor)
                     for rule, hit in engine.run_hits(run_rules, usage, loaded.files, codes)]
    findings = engine.merge(findings)
    results += checked.skipped_for_arguments()
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
