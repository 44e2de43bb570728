"""Findings -> edits of the user's files, for ``--fix``, ``--unsafe-fixes``, ``--diff`` and
``--save-fixed``, and for the fix hints of every run.

While the command line loads the models, ``SourceFixer.visit_model`` notes for each fixable
finding which code in the user's files its fix must change, and ``visit_script`` gathers the
edits the script rules' hits carry. ``plan()`` turns that into edits. A graph rule's fix is
written into the source where its module has a ``source_fix`` (``bnlint.rules.source_fixes``):
the rule says where the edit goes and what it is; this module groups the findings one edit
fixes, makes the edit only where every module it changes needs it, keeps edits that clash for
a later round, and reads and writes the files. Other graph rules have no source edit
(``bnlint.fix`` and ``--save-fixed`` apply them).

A finding the plan cannot edit loses its fix mark (``Plan.mark``) and says why, so every hint
and every output format counts only what ``--fix`` will change. With ``--fix`` (and
``--diff``, ``--save-fixed``), ``bnlint.fix`` also runs on each model: a fix it refuses is not
written either, and a fix it makes only after another one (a reorder that puts a biased layer
right before BatchNorm) tells ``fix_files`` to lint the edited files again.

Only files below the working directory, outside virtualenvs and site-packages, are edited;
``Plan.write`` refuses a file that changed after bnlint read it.
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bnlint import notebook, source
from bnlint.config import DEFAULT_EXCLUDE
from bnlint.edits import Edit, apply_edits, compatible, moved_lines, split_lines, unified_diff
from bnlint.files import FileChanged, Site, display_path, forget_files, read_source, write_atomic
from bnlint.findings import Finding, Hit, Report
from bnlint.load import split_spec
from bnlint.rules import RULES, Rule, Safety, Scope
from bnlint.rules.source_fixes import Rides, SourceFix

MAX_ROUNDS = 4  # --fix: rounds of fixing and linting again, at most


@dataclass(frozen=True)
class Note:
    """Why a fix was not made (or what happened instead), at a place in the user's code."""

    code: str
    message: str
    path: str | None = None
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}: " if self.path else ""
        return where + " ".join(part for part in (self.code, self.message) if part)


def finding_key(finding: Finding) -> tuple:
    """The identity of a (merged) finding: its rule and place, or its model and module."""
    if finding.path is not None:
        return finding.code, finding.path, finding.line, finding.col
    return finding.code, finding.model, finding.module


def _key_note(key: tuple, message: str) -> Note:
    if len(key) == 4:
        return Note(key[0], message, *key[1:])
    code, model, module = key
    return Note(code, f"`{module}` in {model}: {message}")


@dataclass
class Plan:
    """The edits of one run, per file, what they resolve, and why the rest are not made."""

    changes: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (read, fixed)
    resolves: dict[str, set[tuple]] = field(default_factory=dict)  # path -> finding keys
    notes: list[Note] = field(default_factory=list)  # about no finding in particular
    blocked: dict[tuple, tuple[str, str]] = field(default_factory=dict)  # key -> (why, safety)
    blocked_files: dict[str, str] = field(default_factory=dict)  # script path -> why
    deferred: list[tuple[Edit, ...]] = field(default_factory=list)  # clashed with another fix
    fixes: int = 0    # fixes (groups of edits) in ``changes``
    hidden: list[str] = field(default_factory=list)  # codes of unsafe fixes left out
    debiased: dict[str, set[str]] = field(default_factory=dict)  # path -> specs of the models
    # whose layers its edits take parameters from (their old checkpoints need converting)

    def diff(self) -> str:
        return "".join(unified_diff(display_path(path), before, after)
                       for path, (before, after) in self.changes.items())

    def write(self) -> None:
        """Write every changed file atomically; a file edited meanwhile is left alone."""
        for path, (before, after) in list(self.changes.items()):
            try:
                write_atomic(path, before, after)
            except (FileChanged, OSError) as exc:
                self.notes.append(Note("", f"not written: {exc}"))
                del self.changes[path]
                self.resolves.pop(path, None)
                self.debiased.pop(path, None)
        forget_files()

    def remaining(self, report: Report, codes: set[str]) -> Report:
        """``report`` after ``write``: the findings the edits resolved move to ``fixed``, and
        the script rules have checked the edited files again."""
        from bnlint.lint import check_scripts

        edited = {display_path(p): p for p in self.changes}
        resolved = set().union(*self.resolves.values()) if self.resolves else set()
        script = {c for c in codes if RULES[c].scope == Scope.SCRIPT}
        kept = [f for f in report.findings if finding_key(f) not in resolved
                and not (f.code in script and f.path in edited)]
        again = check_scripts([Path(p) for p in self.changes], script)
        found_again = {(f.code, f.path, f.cell, f.line, f.col) for f in again}
        moved = {path: _moved(real, *self.changes[real]) for path, real in edited.items()}
        left = {id(f) for f in kept}
        fixed = [f for f in report.findings if id(f) not in left and (
            f.code, f.path, *moved.get(f.path, {}).get((f.cell, f.line), (None, None)),
            f.col) not in found_again]
        kept = sorted(kept + again, key=lambda f: (f.path or "", f.cell or 0, f.line or 0,
                                                   f.col or 0, f.code))
        return replace(report, findings=kept, fixed=fixed)

    def why_not(self, finding: Finding) -> str | None:
        """Why ``--fix`` (with ``--unsafe-fixes``) would not edit the source for this finding."""
        if finding.fix is None:
            return None
        if RULES[finding.code].scope == Scope.SCRIPT:
            return self.blocked_files.get(finding.path)
        blocked = self.blocked.get(finding_key(finding))
        return blocked[0] if blocked else None

    def mark(self, report: Report) -> Report:
        """``report`` with the fix mark taken off each finding the source fixes cannot make,
        and the reason added to its message."""
        findings = []
        for f in report.findings:
            why = self.why_not(f)
            findings.append(f if why is None else replace(
                f, fix=None, message=f"{f.message} (Not fixable in the source: {why}.)"))
        return replace(report, findings=findings)

    def explained(self, unsafe: bool) -> list[Note]:
        """For ``--diff``, where no finding is shown: each fix that is not in the diff, and why."""
        notes = [_key_note(key, f"not fixed in the source: {why}")
                 for key, (why, safety) in self.blocked.items() if safety == Safety.SAFE or unsafe]
        notes += [Note("", f"not fixed: {why}")
                  for path, why in self.blocked_files.items()]
        for group in self.deferred:
            line, col = group[0].start
            notes.append(Note(group[0].code, "not in this diff: it touches the same code as "
                              "another fix; --fix makes it after that one",
                              display_path(group[0].path), line, col + 1))
        return sorted(notes, key=lambda n: (n.path or "", n.line or 0, n.col or 0, n.code))


def _moved(path: str, before: str, after: str) -> dict[tuple, tuple]:
    """Each (cell, line) of ``before`` that the edits kept -> its place in ``after`` (the cell
    is None outside a notebook)."""
    if notebook.is_notebook(path):
        return notebook.moved_lines(before, after)
    return {(None, old): (None, new) for old, new in moved_lines(before, after).items()}


def named_paths(specs: Iterable[str]) -> list[Path]:
    """The files and folders the user named (``file.py:EXPR`` names ``file.py``)."""
    paths = [Path(split_spec(spec)[0]) for spec in specs]
    return [p.resolve() for p in paths if p.exists()]


def _editable(path: str, named: list[Path]) -> str | None:
    """Why bnlint must not edit this file, or None. Only files the user named, or that lie in
    a folder the user named, are edited: a helper in another file may also build layers for
    models nobody asked bnlint to check."""
    resolved = Path(path).resolve()
    if not any(resolved == root or root in resolved.parents for root in named):
        return ("was not named on the command line (name it, or a folder holding it, to let "
                "bnlint edit it)")
    relative = display_path(path)
    if os.path.isabs(relative):
        return "is outside the working directory"
    for part in Path(relative).parts[:-1]:
        if any(fnmatch.fnmatch(part, pattern) for pattern in DEFAULT_EXCLUDE):
            return f"is inside `{part}`"
    return None


def folder_name(spec: str) -> str:
    """A Python package name for a model spec: ``models/vgg.py:vgg11()`` -> ``vgg_vgg11``."""
    target, expr = split_spec(spec)
    stem = Path(target).stem if target.endswith(".py") else target.rpartition(".")[2]
    name = re.sub(r"\W+", "_", f"{stem}_{expr or ''}").strip("_") or "model"
    return f"model_{name}" if name[0].isdigit() else name


class _CodeAt:
    def __init__(self, filename: str, line: int):
        self.co_filename, self.co_firstlineno = filename, line


class _FunctionAt:
    """A function (a forward) by its name and where it is defined: what the plan reads of it,
    the same in every process."""

    def __init__(self, name: str, filename: str, line: int):
        self.__name__, self.__code__ = name, _CodeAt(filename, line)

    @classmethod
    def of(cls, where):
        if isinstance(where, (Site, _FunctionAt)):
            return where
        return cls(where.__name__, os.path.realpath(where.__code__.co_filename),
                   where.__code__.co_firstlineno)

    def _key(self) -> tuple:
        return self.__name__, self.__code__.co_filename, self.__code__.co_firstlineno

    def __eq__(self, other) -> bool:
        return isinstance(other, _FunctionAt) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class _ClassAt:
    """A layer class by where it is defined, with its name and its constructor's parameters
    (without defaults): what the source edits read of it, the same in every process."""

    def __init__(self, key: tuple[str, str], name: str, signature: inspect.Signature | None):
        self.key, self.__name__, self.__signature__ = key, name, signature

    @classmethod
    def of(cls, layer: type) -> _ClassAt:
        try:
            parameters = inspect.signature(layer).parameters.values()
            signature = inspect.Signature([p.replace(
                default=None if p.default is not p.empty else p.empty,
                annotation=p.empty) for p in parameters])
        except (TypeError, ValueError):
            signature = None
        return cls(source.class_key(layer), layer.__name__, signature)

    def __call__(self, *args, **kwargs):  # inspect.signature reads only callables
        raise TypeError(f"{self.__name__} stands for a class of another process")

    def __eq__(self, other) -> bool:
        return isinstance(other, _ClassAt) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass
class Group:
    """One source edit and the findings it fixes: every module it changes must need it.
    ``where`` is the constructor call it edits, or the forward function whose calls of the
    BatchNorm ``attr`` it rewrites; ``variants`` what the edit depends on, one for each way
    the modules were seen (more than one cannot be edited)."""

    code: str
    safety: str
    where: Site | Callable
    attr: str = ""
    members: set[tuple[str, str]] = field(default_factory=set)  # (model spec, module name)
    keys: set[tuple] = field(default_factory=set)
    variants: set = field(default_factory=set)
    refused: str | None = None

    @property
    def position(self) -> tuple:
        if isinstance(self.where, Site):
            return self.where.path, self.where.line, self.where.col
        code = self.where.__code__
        return os.path.realpath(code.co_filename), code.co_firstlineno, 0


class SourceFixer:
    """Collects, model by model and script by script, what the source fixes need.

    ``unsafe``: apply the unsafe fixes too (the plan finds out which it could make either way).
    ``graph_fix``: run ``bnlint.fix`` on each model (for ``--fix``, ``--diff`` and to save);
    without it the fixer only tells what the source fixes could do.
    """

    def __init__(self, codes: set[str], *, unsafe: bool, named: Iterable[str] = (),
                 save_to: Path | None = None, graph_fix: bool = True):
        self.codes = codes
        self.specs = tuple(named)
        self.named = named_paths(self.specs)
        self.unsafe = unsafe
        self.save_to = save_to
        self.graph_fix = graph_fix
        self.saved: list[str] = []
        self.notes: list[Note] = []
        self.blocked: dict[tuple, tuple[str, str]] = {}
        self.blocked_files: dict[str, str] = {}
        self.hidden: list[str] = []  # codes of script fixes left out (unsafe fixes are off)
        self.hidden_graph: list[str] = []  # codes of unsafe fixes bnlint.fix left out
        self.exposed = 0  # fixes bnlint.fix made only after another fix
        # construction site -> {(model spec, module name): class} of every module built there
        self.built: dict[Site, dict[tuple[str, str], type]] = {}
        # a user-defined forward -> the (model spec, module name) of every module that runs it
        self.runs: dict[Callable, list[tuple[str, str]]] = {}
        self.groups: dict[tuple, Group] = {}  # (code, where, attr) -> the group
        # (code, model spec, module name) -> what the rule's ``from_fixed`` read from the model
        # its graph fix made
        self.fixed_variants: dict[tuple[str, str, str], object] = {}
        self.scripts: list[tuple[Edit, ...]] = []

    def again(self) -> SourceFixer:
        """A fresh fixer with the same settings, for another round (nothing is saved twice)."""
        return SourceFixer(self.codes, unsafe=self.unsafe, named=self.specs,
                           graph_fix=self.graph_fix)

    # --- across processes --------------------------------------------------------------------

    def portable(self) -> SourceFixer:
        """What this fixer gathered, with the functions and classes it keys on replaced by
        stand-ins that name where they are defined, for a worker process to send to the run's
        fixer (``absorb``)."""
        other = self.again()
        classes: dict[type, _ClassAt] = {}  # one stand-in per class: a model has few

        def stand_in(cls: type) -> _ClassAt:
            if cls not in classes:
                classes[cls] = _ClassAt.of(cls)
            return classes[cls]

        other.built = {site: {key: stand_in(cls) for key, cls in modules.items()}
                       for site, modules in self.built.items()}
        other.runs = {_FunctionAt.of(f): list(keys) for f, keys in self.runs.items()}
        other.groups = {(code, _FunctionAt.of(where), attr):
                        replace(group, where=_FunctionAt.of(group.where))
                        for (code, where, attr), group in self.groups.items()}
        other.fixed_variants = dict(self.fixed_variants)
        other.blocked = dict(self.blocked)
        other.hidden_graph = list(self.hidden_graph)
        other.exposed, other.notes = self.exposed, list(self.notes)
        return other

    def absorb(self, other: SourceFixer) -> None:
        """Take in what ``other`` (a worker's ``portable`` fixer) gathered on its models."""
        for site, modules in other.built.items():
            self.built.setdefault(site, {}).update(modules)
        for where, keys in other.runs.items():
            self.runs.setdefault(where, []).extend(keys)
        for key, group in other.groups.items():
            mine = self.groups.setdefault(key, replace(group, members=set(), keys=set(),
                                                       variants=set(), refused=None))
            mine.members |= group.members
            mine.keys |= group.keys
            mine.variants |= group.variants
            mine.refused = mine.refused or group.refused
        self.fixed_variants.update(other.fixed_variants)
        self.blocked.update(other.blocked)
        self.hidden_graph += other.hidden_graph
        self.exposed += other.exposed
        self.notes += other.notes

    # --- gathering -----------------------------------------------------------------------------

    def visit_model(self, spec: str, model, findings: list[Finding]) -> None:
        for site, modules in source.built_by_call(model).items():
            for name, module in modules:
                self.built.setdefault(site, {})[(spec, name)] = type(module)
        for name, module in model.named_modules():
            forward = type(module).forward
            if source.user_function(forward):
                self.runs.setdefault(forward, []).append((spec, name))
        fixable = [f for f in findings if f.fix and RULES[f.code].scope == Scope.GRAPH]
        if not fixable:
            return  # nothing to fix: only the calls and forwards it has count (above)
        needed = self.save_to is not None or any(source_fix(f.code) for f in fixable)
        refused = self._fix_graph(spec, model, fixable) if self.graph_fix and needed else {}
        if not self.graph_fix:
            self._fixed_variants(spec, model, fixable)
        for finding in fixable:
            self._target(spec, model, finding, refused.get((finding.code, finding.module)))

    def _fix_graph(self, spec: str, model, fixable: list[Finding]) -> dict[tuple, str]:
        """Run ``bnlint.fix``: save the fixed model if asked, count the fixes it made only after
        another one, and return the findings' fixes it refused, with the reason."""
        from bnlint.autofix import CopyError, fix

        try:
            result = fix(model, select=sorted(self.codes), unsafe=self.unsafe)
        except CopyError as exc:
            return {(f.code, f.module): str(exc) for f in fixable}
        if self.save_to is not None:
            self._save(spec, result)
        self._record_fixed(spec, result)
        by_module = {(f.code, f.module): f for f in fixable}
        refused = {}
        for entry in result.skipped:
            finding = by_module.get((entry.code, entry.module))
            if finding is None:
                continue
            if finding.fix == Safety.UNSAFE and not self.unsafe:
                self.hidden_graph.append(entry.code)
            else:
                refused[(entry.code, entry.module)] = entry.reason
        self.exposed += sum((e.code, e.module) not in by_module and source_fix(e.code) is not None
                            for e in result.applied)
        return refused

    def _fixed_variants(self, spec: str, model, fixable: list[Finding]) -> None:
        """For a run that only plans: what the graph fixes whose source edit depends on the
        fixed model (a ``from_fixed`` rule) would make of ``model``."""
        from bnlint.autofix import CopyError, fix

        codes = sorted({f.code for f in fixable
                        if (found := source_fix(f.code)) and found.from_fixed is not None})
        if not codes:
            return
        try:
            self._record_fixed(spec, fix(model, select=codes, unsafe=True))
        except CopyError:
            pass

    def _record_fixed(self, spec: str, result) -> None:
        for entry in result.applied:
            found = source_fix(entry.code)
            if found is not None and found.from_fixed is not None:
                self.fixed_variants[(entry.code, spec, entry.module)] = found.from_fixed(
                    result.model, entry.module)

    def _target(self, spec: str, model, finding: Finding, refused: str | None) -> None:
        """File the finding under the source edit that fixes it, or say why there is none."""
        key = finding_key(finding)
        rule_fix = source_fix(finding.code)
        if rule_fix is None:
            options = "--save-fixed DIR" + " --unsafe-fixes" * (finding.fix == Safety.UNSAFE)
            self.blocked[key] = (f"bnlint has no source edit for {finding.code}; `{options}` "
                                 "writes the model with it fixed", finding.fix)
            return
        site = source.recorded_site(model.get_submodule(finding.module))
        target = rule_fix.target(self, spec, model, finding, site)
        if target.where is None:
            self.blocked[key] = ("no line of a .py file built the layer (an expression on "
                                 "the command line or library code did)", finding.fix)
            return
        group = self.groups.setdefault((finding.code, target.where, target.attr),
                                       Group(finding.code, finding.fix, target.where, target.attr))
        group.members.add((spec, finding.module))
        group.keys.add(key)
        group.variants.add(target.variant)
        group.refused = group.refused or refused or target.refused

    def built_types(self, site: Site) -> set[type]:
        """The classes of the modules built at ``site``, in every model seen."""
        return set(self.built.get(site, {}).values())

    def group(self, code: str, where) -> Group | None:
        """The group of rule ``code``'s edit of the constructor call at ``where``, if any."""
        return self.groups.get((code, where, ""))

    def visit_script(self, path: Path, hits: list[tuple[Rule, Hit]]) -> None:
        """Gather the edits of the script rules' fixes of one script: ``hits`` are the ones no
        comment suppresses."""
        why = _editable(os.path.realpath(path), self.named)
        for _, hit in hits:
            for edit in hit.edits:
                if why is not None:
                    self.blocked_files[display_path(path)] = \
                        f"{display_path(path)} {why}"
                elif edit.safety == Safety.SAFE or self.unsafe:
                    self.scripts.append((replace(edit, path=os.path.realpath(path)),))
                else:
                    self.hidden.append(edit.code)

    def _save(self, spec: str, result) -> None:
        from bnlint.export import ExportError, write_model

        if not result.applied:
            return
        folder = self.save_to / folder_name(spec)
        fixes = [f"{e.code} {e.module}" for e in result.applied]
        try:
            write_model(result.model, folder, title=f"{spec}, fixed by bnlint", fixes=fixes)
        except ExportError as exc:
            self.notes.append(Note("", f"{spec}: fixed model not saved: {exc}"))
            return
        self.saved.append(f"{spec}: fixed model saved to {folder} "
                          f"({len(fixes)} fix{'es' * (len(fixes) != 1)})")

    # --- planning ------------------------------------------------------------------------------

    def plan(self) -> Plan:
        plan = Plan(notes=list(dict.fromkeys(self.notes)), blocked=dict(self.blocked),
                    blocked_files=dict(self.blocked_files), hidden=list(self.hidden))
        files: dict[str, tuple[str, list[str], ast.Module] | str] = {}
        fixes: dict[tuple[Edit, ...], Group | None] = {}
        # (code, where) of a fix -> how it makes other rules' fixes there, and their findings
        riders: dict[tuple, dict[str, set[tuple]]] = {}
        for group in sorted(self.groups.values(), key=lambda g: g.position):
            edits = self._edits(group, files)
            if isinstance(edits, str):
                for key in group.keys:
                    plan.blocked.setdefault(key, (edits, group.safety))
            elif isinstance(edits, Rides):  # not a fix of its own, so not among the hidden ones
                riders.setdefault((edits.code, group.where), {}).setdefault(
                    edits.what, set()).update(group.keys)
            elif group.safety == Safety.UNSAFE and not self.unsafe:
                plan.hidden.append(group.code)
            else:
                fixes[tuple(edits)] = group
        fixes.update(dict.fromkeys(self.scripts))
        kept, plan.deferred = compatible(fixes)
        by_path: dict[str, list[Edit]] = {}
        for edits in kept:
            path, group = edits[0].path, fixes[edits]
            by_path.setdefault(path, []).extend(edits)
            plan.fixes += 1
            if group is None:
                continue
            keys = set(group.keys)
            if not group.attr:
                keys.update(*riders.get((group.code, group.where), {}).values())
            plan.resolves.setdefault(path, set()).update(keys - plan.blocked.keys())
            if source_fix(group.code).breaks_checkpoints:
                plan.debiased.setdefault(path, set()).update(spec for spec, _ in group.members)
        for (code, where), rides in riders.items():
            why = next((plan.blocked[k][0] for k in self.group(code, where).keys
                        if k in plan.blocked), None)
            for what, keys in rides.items() if why else ():
                for key in keys:
                    plan.blocked.setdefault(key, (f"{what}, and it is not made: {why}",
                                                  Safety.UNSAFE))
        for path, edits in by_path.items():
            before = read_source(path)
            edit = notebook.apply_edits if notebook.is_notebook(path) else apply_edits
            after = edit(before, edits)
            if after != before:
                plan.changes[path] = (before, after)
        plan.debiased = {p: specs for p, specs in plan.debiased.items() if p in plan.changes}
        return plan

    def _edits(self, group: Group, files: dict) -> list[Edit] | str | Rides:
        """The edits of one fix, or why there are none."""
        if group.refused:
            return group.refused
        rule_fix = source_fix(group.code)
        if isinstance(group.where, Site):
            site = group.where
            others = [key for key in self.built.get(site, {}) if key not in group.members]
            what = rule_fix.kept
            path, calls = site.path, "call"
        else:
            others = [(spec, f"{name}.{group.attr}" if name else group.attr)
                      for spec, name in self.runs.get(group.where, [])]
            others = [key for key in others if key not in group.members]
            what = rule_fix.kept_in_forward
            path, calls = os.path.realpath(group.where.__code__.co_filename), "forward"
        if others:
            spec, name = others[0]
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            verb = "builds" if calls == "call" else "runs for"
            return f"the same {calls} also {verb} `{name}` (in {spec}){more}, where {what}"
        why = _editable(path, self.named)
        if why is not None:
            return f"{display_path(path)} {why}"
        if path not in files:
            try:
                text = read_source(path)
                files[path] = (text, split_lines(text), ast.parse(text, path))
            except (OSError, UnicodeDecodeError, SyntaxError) as exc:
                files[path] = f"cannot read it again: {exc}"
        if isinstance(files[path], str):
            return files[path]
        _, lines, tree = files[path]
        return rule_fix.edits(self, group, path, lines, tree)


def source_fix(code: str) -> SourceFix | None:
    """The source edit of graph rule ``code``'s fix, if its module declares one."""
    return getattr(RULES[code].implementation(), "source_fix", None)


# --- --fix, to the end -----------------------------------------------------------------------------

def _more_to_do(fixer: SourceFixer, plan: Plan, remaining: Report) -> bool:
    """Whether the edits made room for more fixes: ``bnlint.fix`` made some only after others,
    fixes clashed with each other, or the edited scripts have fixable findings again."""
    edited = {display_path(p) for p in plan.changes}
    return bool(plan.changes) and bool(fixer.exposed or plan.deferred or any(
        (f.fix == Safety.SAFE or f.fix == Safety.UNSAFE and fixer.unsafe)
        and RULES[f.code].scope == Scope.SCRIPT
        and f.path in edited for f in remaining.findings))


def _forget_imports(fixer: SourceFixer, edited: Iterable[str]) -> None:
    """Have the next import of an edited file (the next round's, or the caller's) read it
    afresh: drop from ``sys.modules`` every module imported from the edited files, or from the
    files and folders named (which may hold what an edited file defined)."""
    if not edited:
        return
    edited = {os.path.realpath(p) for p in edited}
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if not filename or not source.is_user_file(filename):
            continue
        path = os.path.realpath(filename)
        if path in edited or _editable(path, fixer.named) is None:
            del sys.modules[name]


def fix_files(report: Report, fixer: SourceFixer,
              relint: Callable[[SourceFixer], Report]) -> tuple[Report, Plan, bool]:
    """``--fix``: write the planned edits; while they make room for more, lint again with a
    fresh fixer (``relint``) and fix what that finds, in at most ``MAX_ROUNDS`` rounds.
    Returns what remains (findings the source fixes cannot make marked so, and in ``fixed``
    every finding the rounds fixed), one plan for them all (every file changed, the notes, and
    the fixes still left out), and whether a file could not be written."""
    done = Plan()
    fixed: list[Finding] = []
    refused = False
    for number in range(1, MAX_ROUNDS + 1):
        plan = fixer.plan()
        planned = len(plan.changes)
        plan.write()
        refused |= len(plan.changes) < planned
        _forget_imports(fixer, plan.changes)
        remaining = plan.remaining(report, fixer.codes)
        fixed += remaining.fixed
        for path, (before, after) in plan.changes.items():
            done.changes[path] = (done.changes.get(path, (before,))[0], after)
        for path, specs in plan.debiased.items():
            done.debiased.setdefault(path, set()).update(specs)
        done.fixes += plan.fixes
        done.notes += [n for n in plan.notes if n not in done.notes]
        if not _more_to_do(fixer, plan, remaining):
            break
        if number == MAX_ROUNDS:
            done.notes.append(Note("", f"stopped after {MAX_ROUNDS} rounds of fixes, each "
                                   "making room for more; run bnlint --fix again"))
            break
        fixer = fixer.again()
        report = relint(fixer)
    done.hidden = plan.hidden
    return replace(plan.mark(remaining), fixed=fixed), done, refused
