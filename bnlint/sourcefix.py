"""Findings -> edits of the user's files, for ``--fix``, ``--unsafe-fixes``, ``--diff`` and
``--save-fixed``, and for the fix hints of every run.

While the command line loads the models, ``SourceFixer.visit_model`` notes for each fixable
finding which code in the user's files its fix must change, and ``visit_script`` gathers the
script rules' edits. ``plan()`` turns that into edits:

* BN001: the constructor call gets ``bias=False``, but only when every layer that call built,
  in every model checked, needs it: a helper that builds one conv feeding BatchNorm and one
  that does not is left alone;
* BN002 (unsafe): an activation and its BatchNorm built as neighbouring entries of one
  ``nn.Sequential(...)`` or list trade places; where the module's own forward calls them
  (nested, or in consecutive assignments), the calls are rewritten, if that forward runs
  nowhere the fix does not apply;
* BN006 (unsafe): the call that built a BatchNorm1d the graph fix replaced with a LayerNorm
  builds ``nn.LayerNorm(C)`` instead; a BatchNorm wrapped in transposes is described;
* BN007 (unsafe): the ``momentum`` number of the call that built the BatchNorm becomes
  ``1 - momentum``;
* BN008 (unsafe): a dropout built as the entry before its BatchNorm (or before the ops
  between) moves after the BatchNorm's block; where BN002's reorder of the same BatchNorm
  moves the dropout already, that edit fixes both;
* other graph rules have no source edit (``bnlint.fix`` and ``--save-fixed`` apply them).

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

from bnlint import config, notebook, source
from bnlint.config import DEFAULT_EXCLUDE
from bnlint.edits import (
    Edit,
    FileChanged,
    apply_edits,
    compatible,
    moved_lines,
    node_at,
    read_source,
    split_lines,
    unified_diff,
    write_atomic,
)
from bnlint.findings import SAFE, UNSAFE, Finding, Report
from bnlint.load import split_spec
from bnlint.rules import GRAPH, RULES, SCRIPT

BN001, BN002, BN006, BN007, BN008 = "BN001", "BN002", "BN006", "BN007", "BN008"
# the graph rules whose fix bnlint writes into the source, and what stays as it was in a
# module built by the same call that does not need the fix
_KEPT = {BN001: "its bias is not dead", BN002: "it keeps its place",
         BN006: "it normalises its features already", BN007: "its momentum is right",
         BN008: "no dropout feeds it"}
EDITED = tuple(_KEPT)
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
    # whose layers its BN001 edits take the bias from (their old checkpoints need converting)

    def diff(self) -> str:
        return "".join(unified_diff(source.display_path(path), before, after)
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
        source.forget_files()

    def remaining(self, report: Report, codes: set[str]) -> Report:
        """``report`` after ``write``: the findings the edits resolved move to ``fixed``, and
        the script rules have checked the edited files again."""
        from bnlint.lint import check_scripts

        edited = {source.display_path(p): p for p in self.changes}
        resolved = set().union(*self.resolves.values()) if self.resolves else set()
        script = {c for c in codes if RULES[c].scope == SCRIPT}
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
        if RULES[finding.code].scope == SCRIPT:
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
                 for key, (why, safety) in self.blocked.items() if safety == SAFE or unsafe]
        notes += [Note("", f"not fixed: {why}")
                  for path, why in self.blocked_files.items()]
        for group in self.deferred:
            line, col = group[0].start
            notes.append(Note(group[0].code, "not in this diff: it touches the same code as "
                              "another fix; --fix makes it after that one",
                              source.display_path(group[0].path), line, col + 1))
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
    relative = source.display_path(path)
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
        if isinstance(where, (source.Site, _FunctionAt)):
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


def _user_function(function) -> bool:
    code = getattr(function, "__code__", None)
    return code is not None and source.is_user_file(code.co_filename)


def _function_node(tree: ast.Module, function) -> ast.FunctionDef | None:
    """The definition of ``function`` in its file's tree."""
    first = function.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.name == function.__name__
                and first in (node.lineno, *(d.lineno for d in node.decorator_list))):
            return node
    return None


@dataclass
class _Group:
    """One source edit and the findings it fixes: every module it changes must need it.
    ``where`` is the constructor call it edits, or the forward function whose calls of the
    BatchNorm ``attr`` it rewrites; ``variants`` how the ops between are written (one for
    each way seen: more than one cannot be edited)."""

    code: str
    safety: str
    where: source.Site | Callable
    attr: str = ""
    members: set[tuple[str, str]] = field(default_factory=set)  # (model spec, module name)
    keys: set[tuple] = field(default_factory=set)
    variants: set = field(default_factory=set)
    refused: str | None = None

    @property
    def position(self) -> tuple:
        if isinstance(self.where, source.Site):
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
        self.built: dict[source.Site, dict[tuple[str, str], type]] = {}
        # a user-defined forward -> the (model spec, module name) of every module that runs it
        self.runs: dict[Callable, list[tuple[str, str]]] = {}
        self.groups: dict[tuple, _Group] = {}
        # (model spec, BatchNorm name) -> the size of the LayerNorm that replaced it (None:
        # the fixed model wraps it in transposes instead)
        self.layer_norms: dict[tuple[str, str], int | None] = {}
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
        other.layer_norms = dict(self.layer_norms)
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
        self.layer_norms.update(other.layer_norms)
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
            if _user_function(forward):
                self.runs.setdefault(forward, []).append((spec, name))
        fixable = [f for f in findings if f.fix and RULES[f.code].scope == GRAPH]
        if not fixable:
            return  # nothing to fix: only the calls and forwards it has count (above)
        needed = self.save_to is not None or any(f.code in EDITED for f in fixable)
        refused = self._fix_graph(spec, model, fixable) if self.graph_fix and needed else {}
        if not self.graph_fix and any(f.code == BN006 for f in fixable):
            self._layer_norm_sizes(spec, model)
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
        self._record_layer_norms(spec, result)
        by_module = {(f.code, f.module): f for f in fixable}
        refused = {}
        for entry in result.skipped:
            finding = by_module.get((entry.code, entry.module))
            if finding is None:
                continue
            if finding.fix == UNSAFE and not self.unsafe:
                self.hidden_graph.append(entry.code)
            else:
                refused[(entry.code, entry.module)] = entry.reason
        self.exposed += sum((e.code, e.module) not in by_module and e.code in EDITED
                            for e in result.applied)
        return refused

    def _layer_norm_sizes(self, spec: str, model) -> None:
        """What BN006's graph fix puts in place of each BatchNorm, for a run that only plans:
        the edit of the constructor call depends on it."""
        from bnlint.autofix import CopyError, fix

        try:
            self._record_layer_norms(spec, fix(model, select=[BN006], unsafe=True))
        except CopyError:
            pass

    def _record_layer_norms(self, spec: str, result) -> None:
        for entry in result.applied:
            if entry.code == BN006:
                shape = getattr(result.model.get_submodule(entry.module), "normalized_shape", None)
                self.layer_norms[(spec, entry.module)] = shape[0] if shape else None

    def _target(self, spec: str, model, finding: Finding, refused: str | None) -> None:
        """File the finding under the source edit that fixes it, or say why there is none."""
        key = finding_key(finding)
        if finding.code not in EDITED:
            options = "--save-fixed DIR" + " --unsafe-fixes" * (finding.fix == UNSAFE)
            self.blocked[key] = (f"bnlint has no source edit for {finding.code}; `{options}` "
                                 "writes the model with it fixed", finding.fix)
            return
        module = model.get_submodule(finding.module)
        attr, variant, where = "", None, source.recorded_site(module)
        if finding.code == BN002:
            from bnlint.rules.act_before_bn import forward_steps

            owner, _, attr = finding.module.rpartition(".")
            forward = type(model.get_submodule(owner)).forward
            if _user_function(forward):
                where = forward
                variant = forward_steps(finding.related, finding.module, owner,
                                        lambda name: _has_module(model, name))
                if isinstance(variant, str):
                    refused = refused or variant
            else:
                attr = ""
                variant = self._entry_sites(model, finding)
        elif finding.code == BN006:
            variant = self.layer_norms.get((spec, finding.module))
        elif finding.code == BN007:
            variant = module.momentum
        elif finding.code == BN008:
            variant = self._entry_sites(model, finding)
        if where is None:
            self.blocked[key] = ("no line of a .py file built the layer (an expression on "
                                 "the command line or library code did)", finding.fix)
            return
        group = self.groups.setdefault((finding.code, where, attr),
                                       _Group(finding.code, finding.fix, where, attr))
        group.members.add((spec, finding.module))
        group.keys.add(key)
        group.variants.add(variant)
        group.refused = group.refused or refused

    @staticmethod
    def _entry_sites(model, finding: Finding) -> tuple[source.Site, ...] | None:
        """Where the modules a finding names besides its BatchNorm were built (BN002: the
        activation and the ops between; BN008: the dropout, the ops between and the activation
        after), if all are modules."""
        sites = []
        for name in finding.related:
            site = source.recorded_site(model.get_submodule(name)) if _has_module(
                model, name) else None
            if site is None:
                return None
            sites.append(site)
        return tuple(sites)

    def visit_script(self, path: Path, text: str, tree: ast.Module) -> None:
        why = _editable(os.path.realpath(path), self.named)
        for code in sorted(self.codes):
            rule = RULES[code]
            fixer = getattr(rule.implementation(), "fix", None) if rule.scope == SCRIPT else None
            if fixer is None:
                continue
            for edit in fixer(path, text, tree):
                if config.is_suppressed(edit.code, str(path), edit.start[0], edit.end[0]):
                    continue
                if why is not None:
                    self.blocked_files[source.display_path(path)] = \
                        f"{source.display_path(path)} {why}"
                elif edit.safety == SAFE or self.unsafe:
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
        fixes: dict[tuple[Edit, ...], _Group | None] = {}
        riders: dict[source.Site, set[tuple]] = {}  # BN008 findings BN002's reorder there fixes
        for group in sorted(self.groups.values(), key=lambda g: g.position):
            edits = self._edits(group, files)
            if isinstance(edits, str):
                for key in group.keys:
                    plan.blocked.setdefault(key, (edits, group.safety))
            elif not edits:  # not a fix of its own, so not counted among the hidden ones
                riders.setdefault(group.where, set()).update(group.keys)
            elif group.safety == UNSAFE and not self.unsafe:
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
            keys = group.keys | (riders.get(group.where, set()) if group.code == BN002 else set())
            plan.resolves.setdefault(path, set()).update(keys - plan.blocked.keys())
            if group.code == BN001:
                plan.debiased.setdefault(path, set()).update(spec for spec, _ in group.members)
        for where, keys in riders.items():
            why = next((plan.blocked[k][0] for k in self.groups[(BN002, where, "")].keys
                        if k in plan.blocked), None)
            for key in keys if why else ():
                because = ("BN002's reorder of the BatchNorm moves the dropout, and it is not "
                           f"made: {why}")
                plan.blocked.setdefault(key, (because, UNSAFE))
        for path, edits in by_path.items():
            before = read_source(path)
            edit = notebook.apply_edits if notebook.is_notebook(path) else apply_edits
            after = edit(before, edits)
            if after != before:
                plan.changes[path] = (before, after)
        plan.debiased = {p: specs for p, specs in plan.debiased.items() if p in plan.changes}
        return plan

    def _edits(self, group: _Group, files: dict) -> list[Edit] | str:
        """The edits of one fix, or why there are none."""
        if group.refused:
            return group.refused
        if isinstance(group.where, source.Site):
            site = group.where
            others = [key for key in self.built.get(site, {}) if key not in group.members]
            what = _KEPT[group.code]
            path, calls = site.path, "call"
        else:
            others = [(spec, f"{name}.{group.attr}" if name else group.attr)
                      for spec, name in self.runs.get(group.where, [])]
            others = [key for key in others if key not in group.members]
            what = "the BatchNorm keeps its place"
            path, calls = os.path.realpath(group.where.__code__.co_filename), "forward"
        if others:
            spec, name = others[0]
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            verb = "builds" if calls == "call" else "runs for"
            return f"the same {calls} also {verb} `{name}` (in {spec}){more}, where {what}"
        why = _editable(path, self.named)
        if why is not None:
            return f"{source.display_path(path)} {why}"
        if path not in files:
            try:
                text = read_source(path)
                files[path] = (text, split_lines(text), ast.parse(text, path))
            except (OSError, UnicodeDecodeError, SyntaxError) as exc:
                files[path] = f"cannot read it again: {exc}"
        if isinstance(files[path], str):
            return files[path]
        _, lines, tree = files[path]
        if group.code == BN001:
            from bnlint.rules.bias_before_bn import source_edit

            call = node_at(tree, ast.Call, *_span(site))
            types = set(self.built[site].values())
            if call is None:
                return "the call is no longer where it was when the model was built"
            if len(types) > 1:
                return "the call builds layers of different classes"
            edit = source_edit(path, lines, call, types.pop())
            return edit if isinstance(edit, str) else [edit]
        if group.code == BN006:
            return _layer_norm_edit(site, lines, tree, group.variants)
        if group.code == BN007:
            return _momentum_edit(site, lines, tree, set(self.built[site].values()),
                                  group.variants)
        if group.code == BN008:
            return self._dropout_edits(site, lines, tree, group.variants)
        from bnlint.rules.act_before_bn import forward_edits, source_edits

        if len(group.variants) != 1 or None in group.variants:
            return ("the activation is not a layer built next to the BatchNorm; move the "
                    "BatchNorm before the activation by hand" if calls == "call" else
                    "`forward` calls different layers in different models")
        variant = next(iter(group.variants))
        if calls == "call":
            return source_edits(path, lines, tree, [*map(_span, variant), _span(site)])
        function = _function_node(tree, group.where)
        if function is None:
            return "`forward` is no longer where it was when the model was built"
        return forward_edits(path, lines, function, variant)

    def _dropout_edits(self, site: source.Site, lines: list[str], tree: ast.Module,
                       variants: set) -> list[Edit] | str:
        """BN008: the dropout's entry moves below the BatchNorm's block; ``[]`` where BN002's
        reorder of the same BatchNorm moves it already."""
        from bnlint.rules.dropout_before_bn import source_edits

        if len(variants) != 1 or None in variants:
            return ("the dropout is not a layer built next to the BatchNorm; move it after the "
                    "BatchNorm by hand")
        reorder = self.groups.get((BN002, site, ""))
        reordered = set()
        if reorder is not None and len(reorder.variants) == 1 and None not in reorder.variants:
            reordered = set(map(_span, next(iter(reorder.variants))))
        return source_edits(site.path, lines, tree,
                            [*map(_span, next(iter(variants))), _span(site)], reordered)


def _momentum_edit(site: source.Site, lines: list[str], tree: ast.Module, types: set[type],
                   momenta: set[float]) -> list[Edit] | str:
    """BN007: the call that built the BatchNorms passes ``1 - momentum`` instead."""
    from bnlint.rules.keras_momentum import source_edit

    call = node_at(tree, ast.Call, *_span(site))
    if call is None:
        return "the call is no longer where it was when the model was built"
    if len(types) > 1:
        return "the call builds BatchNorms of different classes"
    if len(momenta) != 1:
        values = ", ".join(f"{m:g}" for m in sorted(momenta))
        return (f"the BatchNorms the call builds end up with different momenta ({values}): "
                "some are set after they are built")
    edit = source_edit(site.path, lines, call, types.pop(), next(iter(momenta)))
    return edit if isinstance(edit, str) else [edit]


def _layer_norm_edit(site: source.Site, lines: list[str], tree: ast.Module,
                     sizes: set[int | None]) -> list[Edit] | str:
    """BN006: the BatchNorm's constructor call builds the LayerNorm of ``sizes`` instead."""
    from bnlint.rules.wrong_axis import source_edit

    if None in sizes:
        return ("the BatchNorm also normalises values with their features in dim 1, so the "
                "fixed model wraps its other calls in transpose(1, 2); do that in forward() "
                "by hand")
    if len(sizes) != 1:
        return "the call builds BatchNorms for values with different numbers of features"
    call = node_at(tree, ast.Call, *_span(site))
    if call is None:
        return "the call is no longer where it was when the model was built"
    edit = source_edit(site.path, lines, call, next(iter(sizes)))
    return edit if isinstance(edit, str) else [edit]


def _span(site: source.Site) -> tuple[int, int, int, int]:
    """A recorded site as ast reports positions: 1-based lines, 0-based byte columns."""
    return site.line, site.col - 1, site.end_line, site.end_col - 1


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


# --- --fix, to the end -----------------------------------------------------------------------------

def _more_to_do(fixer: SourceFixer, plan: Plan, remaining: Report) -> bool:
    """Whether the edits made room for more fixes: ``bnlint.fix`` made some only after others,
    fixes clashed with each other, or the edited scripts have fixable findings again."""
    edited = {source.display_path(p) for p in plan.changes}
    return bool(plan.changes) and bool(fixer.exposed or plan.deferred or any(
        (f.fix == SAFE or f.fix == UNSAFE and fixer.unsafe) and RULES[f.code].scope == SCRIPT
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
