"""Model -> fixed model: the fixes of the enabled graph rules, applied to a traced copy.

``fix`` deep-copies the model, traces the copy as ``check`` traces a model, and hands every
finding to its rule's ``fix(gm, hit)``. A fix that changes only module state (its rule module
sets ``STATE_ONLY``; BN001: drop a bias, fold it into ``running_mean``) acts on the copy's own
layers, so the fixed model keeps its class and its parameter names; it alone applies to a
forward recorded on one path. A fix that rewires a forward (BN002) turns that part of the
copy into a ``torch.fx.GraphModule`` that holds the same layers under the same names.

(The module is not called ``fix``: importing ``bnlint.fix`` would then shadow the function.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from bnlint import graph
from bnlint.engine import traced_with_input, unsuppressed_hits
from bnlint.findings import Hit
from bnlint.inputs import resolve
from bnlint.rules import RULES, Rule, Safety, Scope, enabled_codes
from bnlint.trace import Traced, Unit

# A reorder can put a biased layer right before BatchNorm; a second round fixes that too.
MAX_ROUNDS = 4


@dataclass(frozen=True)
class FixEntry:
    """One fix: its rule ``code``, the ``module`` it changes (the function, for a functional
    call), the ``related`` modules it involves, and for a skipped fix the ``reason``."""

    code: str
    module: str
    related: tuple[str, ...] = ()
    reason: str | None = None


@dataclass
class FixResult:
    """``model`` is the fixed copy; the model passed to ``fix`` is never changed."""

    model: nn.Module
    applied: list[FixEntry] = field(default_factory=list)
    skipped: list[FixEntry] = field(default_factory=list)


class CopyError(ValueError):
    """The model cannot be deep-copied, and ``fix`` never changes the caller's model."""


def fix(model: nn.Module, *, select=None, ignore=None, unsafe: bool = False,
        example=None) -> FixResult:
    """Fix what ``check`` finds in ``model``: safe fixes always, unsafe ones with ``unsafe=True``.
    ``example``: the forward's input, to see what fx cannot trace, as ``check`` takes it.

    Findings silenced by a ``# bnlint: ignore[...]`` / ``# noqa`` comment are left alone.
    """
    rules = [RULES[c] for c in sorted(enabled_codes(select, ignore))
             if RULES[c].scope == Scope.GRAPH]
    try:
        duplicate = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - whatever the user's attributes refuse
        raise CopyError(f"fix works on a copy of the model; copy.deepcopy failed: {exc}") from exc
    traced, _, _ = traced_with_input(duplicate, resolve(model, example, probing=False), rules)
    fixer = _Fixer(duplicate, unsafe, traced)
    for _ in range(MAX_ROUNDS):
        progress = False
        for index, unit in enumerate(fixer.traced.units):
            groups: dict[tuple[str, str], list] = {}
            for rule, hit, _site in unsuppressed_hits(model, [unit], rules):
                name = hit.module or graph.describe(unit.gm, hit.anchor, unit.prefix)
                groups.setdefault((hit.code, name), []).append((rule, hit))
            for (code, name), hits in groups.items():
                progress |= fixer.attempt(index, name, hits)
        if not progress:
            break
    return FixResult(fixer.install(), fixer.applied, fixer.skipped)


def _submodule(root: nn.Module, name: str) -> nn.Module | None:
    try:
        return root.get_submodule(name)
    except AttributeError:
        return None


class _Fixer:
    def __init__(self, model: nn.Module, unsafe: bool, traced: Traced):
        self.model = model
        self.unsafe = unsafe
        self.traced = traced
        self.applied: list[FixEntry] = []
        self.skipped: list[FixEntry] = []
        self.seen: set[tuple[str, str]] = set()
        self.rewritten: set[int] = set()
        # module -> the traced pieces that call it (a shared layer may be called in several)
        self.callers: dict[int, set[int]] = {}
        for index, unit in enumerate(self.traced.units):
            for node in unit.gm.graph.nodes:
                if node.op == "call_module":
                    module = unit.gm.get_submodule(node.target)
                    self.callers.setdefault(id(module), set()).add(index)

    def attempt(self, index: int, name: str, hits: list[tuple[Rule, Hit]]) -> bool:
        """Fix one finding, once: ``hits`` are its hits in one traced piece (several for a
        layer called more than once). True if the fix was applied."""
        rule, hit = hits[0]
        if (hit.code, name) in self.seen:
            return False
        self.seen.add((hit.code, name))
        related = tuple(dict.fromkeys(r for _, h in hits for r in h.related))
        reason = self._apply(index, rule, hit, related)
        entry = FixEntry(hit.code, name, related, reason)
        (self.applied if reason is None else self.skipped).append(entry)
        return reason is None

    def _apply(self, index: int, rule: Rule, hit: Hit, related: tuple[str, ...]) -> str | None:
        if hit.fix == Safety.UNSAFE and not self.unsafe:
            return "the fix changes what the model computes; it needs unsafe fixes enabled"
        apply = getattr(rule.implementation(), "fix", None)
        if apply is None:
            return "the rule has no automatic fix"
        for name in (hit.module, *related):
            module = _submodule(self.model, name) if name else None
            if module is not None and self.callers.get(id(module), {index}) != {index}:
                return (f"`{name}` is also called in another traced part of the model (another "
                        "branch of a data-dependent forward, or a part traced on its own)")
        unit = self.traced.units[index]
        if unit.dynamic and not getattr(rule.implementation(), "STATE_ONLY", False):
            return ("its forward was recorded by running the example, one path through its "
                    "Python, so a rewritten graph cannot replace it")
        branched = unit.prefix in self.traced.branched
        saved = copy.deepcopy(unit.gm.graph) if branched else None
        before = unit.gm.code
        reason = apply(unit.gm, hit)
        if reason is not None:
            return reason
        unit.gm.graph.lint()
        unit.gm.recompile()
        if unit.gm.code != before:
            if branched:
                unit.gm.graph = saved
                return "its forward branches on the data, so one rewritten graph cannot replace it"
            self.rewritten.add(index)
        return None

    def install(self) -> nn.Module:
        """The fixed model: the copy, with every rewritten part replaced by its new graph."""
        return install(self.model, [self.traced.units[i] for i in sorted(self.rewritten)])


def install(model: nn.Module, rewritten: list[Unit]) -> nn.Module:
    """``model`` with the graph of each traced piece in ``rewritten`` in place of the module it
    traced (outer pieces first, so an inner one lands inside its rewritten parent); a piece at
    the root replaces the model itself."""
    root = model
    for unit in sorted(rewritten, key=lambda u: (u.prefix != "", u.prefix.count("."))):
        if not unit.prefix:
            root = unit.gm
            continue
        parent, _, attr = unit.prefix.rpartition(".")
        setattr(root.get_submodule(parent), attr, unit.gm)
    return root
