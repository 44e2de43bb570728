"""Hits -> findings, for every rule: each hit is placed at the user's source line, dropped when a
comment or per-file-ignores suppress it there, and made a finding; one line's findings merge.

A graph rule's hit is anchored at a graph node (placed at the construction of its module or
the line of its functional call); a script rule's hit, and a run rule's, at a ``Site`` in a
file. Tracing a model imports torch; the rest of this module does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bnlint import source, suppressions
from bnlint.files import Site, display_path
from bnlint.findings import Finding, Hit, Instance, ModelResult, Report
from bnlint.inputs import Example, probe, resolve
from bnlint.rules import RULES, Rule, Scope, enabled_codes

if TYPE_CHECKING:
    from torch import fx, nn

    from bnlint.trace import Traced, Unit

NO_RULE = "no rule ran: the selected rules, less the ignored ones, leave none"


def locate(root: nn.Module, prefix: str, node: fx.Node) -> Site | None:
    """Where the user's code made what ``node`` (in the piece of ``root`` at ``prefix``) runs:
    the construction of its module, or the line of its functional call."""
    if node.op == "call_module":
        return source.construction_site(root, f"{prefix}.{node.target}" if prefix else node.target)
    name = getattr(node.target, "__name__", str(node.target))
    return source.call_site(node.stack_trace, name.rstrip("_"))


def _suppressed(rule: Rule, hit: Hit, site: Site | None, used: set | None) -> bool:
    """Whether a comment on the lines of ``site``, or per-file-ignores, silence ``hit``. A rule
    of scope run judges the suppression comments themselves: only a comment that names it
    silences it, never a bare ``# noqa``."""
    return site is not None and suppressions.is_suppressed(
        hit.code, site.path, site.line, site.end_line, used, bare=rule.scope != Scope.RUN)


def unsuppressed_hits(root: nn.Module, units: Iterable[Unit], rules: Iterable[Rule],
                      used: set | None = None) -> Iterator[tuple[Rule, Hit, Site | None]]:
    """The hits of graph ``rules`` in traced pieces of ``root`` that nothing suppresses, with
    their place in the user's code. ``units`` may come from a copy of ``root``: names are the
    same. ``used`` collects the comments that suppressed one (``suppressions.is_suppressed``)."""
    for unit in units:
        for rule in rules:
            for hit in rule.implementation().check(unit.gm, unit.prefix):
                site = locate(root, unit.prefix, hit.anchor)
                if not _suppressed(rule, hit, site, used):
                    yield rule, hit, site


def script_hits(rules: Iterable[Rule], path: Path, text: str, tree,
                used: set | None = None) -> list[tuple[Rule, Hit]]:
    """The hits of script ``rules`` in one script (``tree``: ``text`` parsed) that nothing
    suppresses; each carries the edits of its fix."""
    return [(rule, hit) for rule in rules for hit in rule.implementation().check(path, text, tree)
            if not _suppressed(rule, hit, hit.anchor, used)]


def run_hits(rules: Iterable[Rule], usage, files: list[Path],
             codes: set[str]) -> list[tuple[Rule, Hit]]:
    """The hits of run ``rules``, judged from what the other rules of the run did (``usage``)
    in the ``files`` it checked, that nothing suppresses."""
    return [(rule, hit) for rule in rules
            for hit in rule.implementation().check(usage, files, codes)
            if not _suppressed(rule, hit, hit.anchor, None)]


def finding(rule: Rule, hit: Hit, site: Site | None, model: str | None = None) -> Finding:
    """The finding ``hit`` makes at ``site`` (in ``model``, for a graph rule)."""
    return Finding(
        code=hit.code,
        severity=rule.severity,
        message=hit.message,
        model=model,
        module=hit.module,
        related=hit.related,
        path=display_path(site.path) if site else None,
        line=site.line if site else None,
        col=site.col if site else None,
        fix=hit.fix,
    )


def traced_with_input(model: nn.Module, example: Example | None, rules: list[Rule],
                      used: set | None = None
                      ) -> tuple[Traced, list[tuple[Rule, Hit, Site | None]], Example | None]:
    """``model`` traced, the hits of ``rules`` in it, and the input it was traced with. Without
    an ``example``, a forward fx cannot follow makes bnlint probe for an input the model takes
    and record a run on it. A probed input is a guess that shows how layers connect, not the
    layout the model is meant for (a Linear runs on (batch, features) and on (batch, length,
    features) alike), so the shapes it gives are dropped and no rule decides anything by them.
    ``used`` collects the suppression comments that silenced a hit."""
    from bnlint.trace import trace_model

    traced = trace_model(model, example)
    if example is None and traced.opaque:
        probed = probe(model)
        if probed is not None:
            example, traced = probed, trace_model(model, probed)
            traced.forget_shapes()
    return traced, list(unsuppressed_hits(model, traced.units, rules, used)), example


def analyse(model: nn.Module, model_name: str, codes: Iterable[str],
            example: Example | None = None,
            used: set | None = None) -> tuple[list[Finding], ModelResult]:
    """Findings for one model (unmerged, one per offending node) and what tracing achieved.
    ``example`` is the forward's input, when one is known; ``used`` collects the suppression
    comments that silenced a finding."""
    rules = [RULES[c] for c in sorted(codes) if RULES[c].scope == Scope.GRAPH]
    traced, hits, example = traced_with_input(model, example, rules, used)
    findings = [finding(rule, hit, site, model_name) for rule, hit, site in hits]
    result = ModelResult(
        spec=model_name,
        status="ok",
        trace=traced.mode,
        opaque=sorted(traced.opaque),
        reason=_unseen(model, traced, example),
        traced_by=traced.traced_by,
        example=example,
    )
    return findings, result


def _unseen(model: nn.Module, traced: Traced, example: Example | None) -> str | None:
    """What stayed opaque and why, what would let bnlint see it, and whether the example
    could not be run."""
    reason = "; ".join(f"{name or '<model>'}: {why}" for name, why in sorted(traced.opaque.items()))
    if traced.opaque and example is None:
        from bnlint.dyntrace import needs_example

        reason = f"{reason}. {needs_example(model)}"
    if traced.run_error:
        reason = f"{reason}. {traced.run_error}" if reason else traced.run_error
    return reason or None


def merge(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per rule and source position: a line that builds eight layers (a block
    used eight times, or by several models) is one problem in the user's code, not eight.
    The merged finding keeps every module as an instance, and its message names the others.
    A finding of a script or of the run stands for no module, and is kept as it is."""
    groups: dict[tuple, list[Finding]] = {}
    for f in findings:
        key = ((f.code, f.path, f.cell, f.line, f.col) if f.path
               else (f.code, f.model, f.module, f.message))
        groups.setdefault(key, []).append(f)
    merged = []
    for group in groups.values():
        if group[0].model is None:  # a script's or the run's: one per place, of no module
            merged.append(group[0])
            continue
        related: dict[tuple, dict[str, None]] = {}  # (model, module) -> related, in order
        for f in group:
            related.setdefault((f.model, f.module), {}).update(dict.fromkeys(f.related))
        instances = tuple(Instance(model, module, tuple(names))
                          for (model, module), names in related.items())
        first = replace(group[0], related=instances[0].related, instances=instances)
        if len(instances) > 1:
            first = replace(first, message=f"{first.message} {_also(first, instances[1:])}")
        merged.append(first)
    return sorted(merged, key=lambda f: (f.path or "", f.line or 0, f.col or 0, f.code))


def _also(first: Finding, others: tuple[Instance, ...]) -> str:
    """``The same line also built `a`, `b`, `c` and 5 more.``: the other instances of a
    merged finding, named inside the first one's model and qualified outside it."""
    def name(other: Instance) -> str:
        if other.model == first.model or other.module is None:
            return f"`{other.module or other.model}`"
        return f"`{other.module}` (in {other.model})"

    shown = ", ".join(name(o) for o in others[:3])
    more = f" and {len(others) - 3} more" if len(others) > 3 else ""
    models = len({first.model, *(o.model for o in others)})
    across = f", in {models} models" if models > 1 else ""
    verb = "built" if first.module else "ran in"
    return f"The same line also {verb} {shown}{more}{across}."


def check(model: nn.Module, *, select=None, ignore=None, name: str | None = None,
          example=None) -> Report:
    """Lint one model object. Nothing about it changes: it is traced, never run.
    ``example`` is the forward's input: a tensor, a tuple of arguments, an ``(args, kwargs)``
    pair or an ``Example``; without one, ``example_input()`` or ``INPUT_SHAPE`` in the model's
    file gives it (``bnlint.inputs.resolve``)."""
    codes = enabled_codes(select, ignore)
    example = resolve(model, example, probing=False)
    findings, result = analyse(model, name or type(model).__name__, codes, example)
    rules = sorted(c for c in codes if RULES[c].scope == Scope.GRAPH)
    warnings = [] if rules else [NO_RULE if not codes else (
        "no rule ran: the selected rules read scripts, and check() is given a model")]
    return Report(findings=merge(findings), models=[result], rules=rules, warnings=warnings)
