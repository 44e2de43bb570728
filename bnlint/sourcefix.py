"""Fixed models -> edits of the user's files, for ``--fix``, ``--unsafe-fixes``, ``--diff``
and ``--save-fixed``.

While the command line loads the models, ``SourceFixer.visit_model`` runs ``bnlint.fix`` on
each one and remembers which layers it fixed and which call in the user's code built them;
``visit_script`` gathers the script rules' edits. ``plan()`` turns that into edits:

* BN001: the constructor call gets ``bias=False``, but only when every layer that call built,
  in every model checked, had its bias folded away: a helper that builds one conv feeding
  BatchNorm and one that does not is left alone, and the note says why;
* BN002 (unsafe): an activation and its BatchNorm built as neighbouring entries of one
  ``nn.Sequential(...)`` or list trade places; anything else is described, not edited;
* BN007 (unsafe): the ``momentum`` number of the call that built the BatchNorm becomes
  ``1 - momentum``;
* BN008 (unsafe): a dropout built as the entry before its BatchNorm (or before the ops
  between) moves after the BatchNorm's block; where BN002's reorder of the same BatchNorm
  moves the dropout already, that edit fixes both.

Only files below the working directory, outside virtualenvs and site-packages, are edited;
``Plan.write`` refuses a file that changed after bnlint read it.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from bnlint import config, source
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
from bnlint.rules import RULES, SCRIPT

BN001, BN002, BN007, BN008 = "BN001", "BN002", "BN007", "BN008"
_KEPT = {BN001: "its bias is not dead", BN002: "it keeps its place",
         BN007: "its momentum is right", BN008: "no dropout feeds it"}


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


def _note(code: str, message: str, site: source.Site | Finding | None) -> Note:
    if site is None or site.path is None:
        return Note(code, message)
    return Note(code, message, source.display_path(site.path), site.line, site.col)


def _span(site: source.Site) -> tuple[int, int, int, int]:
    """A recorded site as ast reports positions: 1-based lines, 0-based byte columns."""
    return site.line, site.col - 1, site.end_line, site.end_col - 1


def _key(code: str, site: source.Site) -> tuple:
    """The identity of the (merged) finding a fix at ``site`` resolves."""
    return code, source.display_path(site.path), site.line, site.col


@dataclass
class Plan:
    """The edits of one run, per file, and what they resolve."""

    changes: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (read, fixed)
    resolves: dict[str, set[tuple]] = field(default_factory=dict)  # path -> finding keys
    notes: list[Note] = field(default_factory=list)
    fixes: int = 0    # fixes (groups of edits) in ``changes``
    hidden: int = 0   # unsafe fixes left out because unsafe fixes are off

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
        source.forget_files()

    def remaining(self, report: Report, codes: set[str]) -> Report:
        """``report`` after ``write``: the findings the edits resolved move to ``fixed``, and
        the script rules have checked the edited files again."""
        from bnlint.lint import check_scripts

        edited = {source.display_path(p): p for p in self.changes}
        resolved = set().union(*self.resolves.values()) if self.resolves else set()
        script = {c for c in codes if RULES[c].scope == SCRIPT}
        kept = [f for f in report.findings if (f.code, f.path, f.line, f.col) not in resolved
                and not (f.code in script and f.path in edited)]
        again = check_scripts([Path(p) for p in self.changes], script)
        found_again = {(f.code, f.path, f.line, f.col) for f in again}
        moved = {path: moved_lines(*self.changes[real]) for path, real in edited.items()}
        left = {id(f) for f in kept}
        fixed = [f for f in report.findings if id(f) not in left and (
            f.code, f.path, moved.get(f.path, {}).get(f.line), f.col) not in found_again]
        kept = sorted(kept + again, key=lambda f: (f.path or "", f.line or 0, f.col or 0, f.code))
        return replace(report, findings=kept, fixed=fixed)


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


class SourceFixer:
    """Collects, model by model and script by script, what the source fixes need."""

    def __init__(self, codes: set[str], *, unsafe: bool, named: Iterable[str] = (),
                 save_to: Path | None = None):
        self.codes = codes
        self.named = named_paths(named)
        self.unsafe = unsafe
        self.save_to = save_to
        self.saved: list[str] = []
        self.notes: list[Note] = []
        self.hidden: set[tuple] = set()  # unsafe fixes left out, by finding
        # construction site -> {(model spec, module name): class} of every module built there
        self.built: dict[source.Site, dict[tuple[str, str], type]] = {}
        # (code, site) -> the (model spec, module name) pairs a graph fix changed
        self.fixed: dict[tuple[str, source.Site], set[tuple[str, str]]] = {}
        # BatchNorm site -> the sites of (activation, ops between) for each model it is in
        self.moves: dict[source.Site, set[tuple[source.Site, ...] | None]] = {}
        # BatchNorm site -> the sites of (dropout, ops between, activation after) (BN008)
        self.dropouts: dict[source.Site, set[tuple[source.Site, ...] | None]] = {}
        # BatchNorm site -> the momentum of each BatchNorm it built that BN007 fixed
        self.momenta: dict[source.Site, set[float]] = {}
        self.scripts: list[tuple[Edit, ...]] = []

    # --- gathering -----------------------------------------------------------------------------

    def visit_model(self, spec: str, model, findings: list[Finding]) -> None:
        from bnlint.autofix import CopyError, fix

        for site, modules in source.built_by_call(model).items():
            for name, module in modules:
                self.built.setdefault(site, {})[(spec, name)] = type(module)
        if not any(f.fix for f in findings):
            return  # nothing to fix: only the calls it made count (above)
        try:
            result = fix(model, select=sorted(self.codes), unsafe=self.unsafe)
        except CopyError as exc:
            self.notes.append(Note("", f"{spec}: not fixed: {exc}"))
            return
        if self.save_to is not None:
            self._save(spec, result)
        fixable = {(f.code, f.module): f for f in findings if f.fix and f.module}
        for entry in result.skipped:
            finding = fixable.get((entry.code, entry.module))
            if finding is None:
                continue
            if finding.fix == UNSAFE and not self.unsafe:
                self.hidden.add((finding.code, finding.path, finding.line, finding.col))
            else:
                self.notes.append(_note(entry.code, f"not fixed: {entry.reason}", finding))
        for entry in result.applied:
            finding = fixable.get((entry.code, entry.module))
            if finding is None:
                continue  # exposed by another fix: the next run finds and fixes it
            site = source.recorded_site(model.get_submodule(entry.module))
            if site is None:
                self.notes.append(_note(entry.code, "not fixed in the source: bnlint could not "
                                        "tell which call built the layer", finding))
                continue
            self.fixed.setdefault((entry.code, site), set()).add((spec, entry.module))
            if entry.code in (BN002, BN008):
                parts = []
                for name in entry.related:
                    try:
                        parts.append(source.recorded_site(model.get_submodule(name)))
                    except AttributeError:
                        parts.append(None)
                moves = self.moves if entry.code == BN002 else self.dropouts
                moves.setdefault(site, set()).add(None if None in parts else tuple(parts))
            if entry.code == BN007:
                self.momenta.setdefault(site, set()).add(model.get_submodule(entry.module).momentum)

    def visit_script(self, path: Path, text: str, tree: ast.Module) -> None:
        for code in sorted(self.codes):
            rule = RULES[code]
            fixer = getattr(rule.implementation(), "fix", None) if rule.scope == SCRIPT else None
            if fixer is None:
                continue
            for edit in fixer(path, text, tree):
                if config.is_suppressed(edit.code, str(path), edit.start[0], edit.end[0]):
                    continue
                if edit.safety == SAFE or self.unsafe:
                    self.scripts.append((replace(edit, path=os.path.realpath(path)),))
                else:
                    self.hidden.add((edit.code, str(path), edit.start))

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
        plan = Plan(notes=list(dict.fromkeys(self.notes)), hidden=len(self.hidden))
        files: dict[str, tuple[str, list[str], ast.Module] | str] = {}
        groups: list[tuple[tuple[Edit, ...], tuple | None]] = []
        riders: dict[tuple, list[tuple]] = {}  # place -> fixes that another fix there makes
        for (code, site), fixed in sorted(self.fixed.items(), key=lambda item: _key(*item[0])):
            edits = self._edits(code, site, fixed, files)
            if isinstance(edits, str):
                plan.notes.append(_note(code, f"not fixed in the source: {edits}", site))
            elif not edits:
                riders.setdefault(_key(code, site)[1:], []).append(_key(code, site))
            else:
                groups.append((tuple(edits), _key(code, site)))
        groups += [(group, None) for group in self.scripts]
        kept, dropped = compatible(group for group, _ in groups)
        for group in dropped:
            line, col = group[0].start
            plan.notes.append(Note(group[0].code, "not fixed: it touches the same code as "
                                   "another fix; run bnlint --fix again",
                                   source.display_path(group[0].path), line, col + 1))
        keys = dict(groups)
        by_path: dict[str, list[Edit]] = {}
        for group in kept:
            path = group[0].path
            by_path.setdefault(path, []).extend(group)
            if keys[group] is not None:
                plan.resolves.setdefault(path, set()).update(
                    [keys[group], *riders.get(keys[group][1:], ())])
            plan.fixes += 1
        for path, edits in by_path.items():
            before = read_source(path)
            plan.changes[path] = (before, apply_edits(before, edits))
        return plan

    def _edits(self, code: str, site: source.Site, fixed: set[tuple[str, str]],
               files: dict) -> list[Edit] | str:
        """The edits for the fix of ``code`` at ``site``, or why there are none."""
        if code not in _KEPT:
            return ("bnlint has no source edit for this fix; `bnlint.fix` and --save-fixed apply "
                    "it to the model")
        others = [key for key in self.built.get(site, {}) if key not in fixed]
        if others:
            spec, name = others[0]
            more = f" and {len(others) - 1} more" if len(others) > 1 else ""
            return f"the same call also builds `{name}` (in {spec}){more}, where {_KEPT[code]}"
        why = _editable(site.path, self.named)
        if why is not None:
            return f"{source.display_path(site.path)} {why}"
        if site.path not in files:
            try:
                text = read_source(site.path)
                files[site.path] = (text, split_lines(text), ast.parse(text, site.path))
            except (OSError, UnicodeDecodeError, SyntaxError) as exc:
                files[site.path] = f"cannot read it again: {exc}"
        if isinstance(files[site.path], str):
            return files[site.path]
        text, lines, tree = files[site.path]
        if code == BN001:
            from bnlint.rules.bias_before_bn import source_edit

            call = node_at(tree, ast.Call, *_span(site))
            types = set(self.built[site].values())
            if call is None:
                return "the call is no longer where it was when the model was built"
            if len(types) > 1:
                return "the call builds layers of different classes"
            edit = source_edit(site.path, lines, call, types.pop())
            return edit if isinstance(edit, str) else [edit]
        if code == BN007:
            return self._momentum_edit(site, lines, tree)
        if code == BN008:
            return self._dropout_edits(site, lines, tree)
        from bnlint.rules.act_before_bn import source_edits

        moves = self.moves.get(site, set())
        if len(moves) != 1 or None in moves:
            return ("the activation is not a layer built next to the BatchNorm; move the "
                    "BatchNorm before the activation by hand")
        return source_edits(site.path, lines, tree, [*map(_span, next(iter(moves))), _span(site)])

    def _momentum_edit(self, site: source.Site, lines: list[str],
                       tree: ast.Module) -> list[Edit] | str:
        from bnlint.rules.keras_momentum import source_edit

        call = node_at(tree, ast.Call, *_span(site))
        types, momenta = set(self.built[site].values()), self.momenta.get(site, set())
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

    def _dropout_edits(self, site: source.Site, lines: list[str],
                       tree: ast.Module) -> list[Edit] | str:
        from bnlint.rules.dropout_before_bn import source_edits

        moves = self.dropouts.get(site, set())
        if len(moves) != 1 or None in moves:
            return ("the dropout is not a layer built next to the BatchNorm; move it after the "
                    "BatchNorm by hand")
        reordered = set()
        if (BN002, site) in self.fixed and len(self.moves.get(site, ())) == 1:
            reordered = set(map(_span, next(iter(self.moves[site])) or ()))
        return source_edits(site.path, lines, tree, [*map(_span, next(iter(moves))), _span(site)],
                            reordered)
