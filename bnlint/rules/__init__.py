"""The rule registry: one entry per rule code.

Entries are plain metadata so that ``--list-rules``, ``--explain`` and the docs never import
torch; the rule's detection (and fix) lives in the module named by ``impl`` and is imported only
when a model is analysed. The long explanation of each rule is ``<CODE>.md`` beside this file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from importlib import resources


class _Word(str, Enum):
    """A member is its word wherever it is written: in text, in JSON, in SARIF."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Scope(_Word):
    """What a rule reads."""

    GRAPH = "graph"    # a traced model
    SCRIPT = "script"  # the source text of a script, which is never run
    RUN = "run"        # what the other rules of the run did: their suppression comments


class Safety(_Word):
    """What a fix does; a rule or finding without a fix has ``None``."""

    SAFE = "safe"      # the fixed model computes the same function
    UNSAFE = "unsafe"  # the fix changes what the model computes (or the script does)


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    summary: str
    scope: Scope
    impl: str
    severity: str = "warning"
    default: bool = True
    fix: Safety | None = None  # what its fix (if any) does to the model

    @property
    def explanation(self) -> str:
        return resources.files(__name__).joinpath(f"{self.code}.md").read_text(encoding="utf-8")

    def implementation(self):
        """The module holding ``check`` (and ``fix``, where the rule has one)."""
        return importlib.import_module(self.impl)


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule(
            code="BN001",
            name="bias-before-batchnorm",
            summary="Layer with a bias feeds BatchNorm, which cancels the bias",
            scope=Scope.GRAPH,
            impl="bnlint.rules.bias_before_bn",
            fix=Safety.SAFE,
        ),
        Rule(
            code="BN002",
            name="activation-before-batchnorm",
            summary="Activation feeds BatchNorm; the usual order is layer, BatchNorm, activation",
            scope=Scope.GRAPH,
            impl="bnlint.rules.act_before_bn",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN003",
            name="inference-in-train-mode",
            summary="Model runs inference (no_grad, export, trace) while it may be in training mode",
            scope=Scope.SCRIPT,
            impl="bnlint.rules.inference_in_train",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN004",
            name="training-in-eval-mode",
            summary="Model is trained while an earlier evaluation may have left it in eval mode",
            scope=Scope.SCRIPT,
            impl="bnlint.rules.training_in_eval",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN005",
            name="deep-plain-network",
            summary="Four or more layer + activation stages in a row with no normalisation",
            scope=Scope.GRAPH,
            impl="bnlint.rules.deep_plain",
            default=False,
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN006",
            name="batchnorm-wrong-axis",
            summary="BatchNorm1d on (batch, length, features) values normalises the positions",
            scope=Scope.GRAPH,
            impl="bnlint.rules.wrong_axis",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN007",
            name="keras-style-momentum",
            summary="BatchNorm momentum above 0.5, Keras's convention; PyTorch's is 1 - that",
            scope=Scope.GRAPH,
            impl="bnlint.rules.keras_momentum",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN008",
            name="dropout-before-batchnorm",
            summary="Dropout feeds BatchNorm, whose running statistics then miss at inference",
            scope=Scope.GRAPH,
            impl="bnlint.rules.dropout_before_bn",
            fix=Safety.UNSAFE,
        ),
        Rule(
            code="BN009",
            name="frozen-batchnorm-in-train-mode",
            summary="BatchNorm with frozen parameters is put in training mode for training",
            scope=Scope.SCRIPT,
            impl="bnlint.rules.frozen_bn_train",
        ),
        Rule(
            code="BN010",
            name="batchnorm-in-gradient-penalty-critic",
            summary="Gradient penalty on a critic that holds BatchNorm, which couples samples",
            scope=Scope.SCRIPT,
            impl="bnlint.rules.gp_critic",
        ),
        Rule(
            code="BN900",
            name="unused-suppression",
            summary="Suppression comment that suppresses no finding of the rules that ran",
            scope=Scope.RUN,
            impl="bnlint.rules.unused_suppression",
            default=False,
        ),
    )
}


class UnknownRuleError(ValueError):
    pass


def resolve_codes(codes) -> set[str]:
    """Expand a list of codes or prefixes (``BN``, ``BN00``, ``ALL``) into known codes."""
    chosen: set[str] = set()
    for raw in codes:
        code = raw.strip().upper()
        if not code:
            continue
        if code == "ALL":
            chosen.update(RULES)
            continue
        matches = {c for c in RULES if c.startswith(code)}
        if not matches:
            raise UnknownRuleError(f"unknown rule code {raw!r} (known: {', '.join(RULES)})")
        chosen.update(matches)
    return chosen


def enabled_codes(select=None, ignore=None) -> set[str]:
    """The codes a run checks: ``select`` (or the default rules) minus ``ignore``."""
    chosen = resolve_codes(select) if select else {c for c, r in RULES.items() if r.default}
    return chosen - resolve_codes(ignore or ())
