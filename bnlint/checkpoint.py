"""Old checkpoints -> the fixed code: after ``--fix`` gave a layer ``bias=False``, a state_dict
saved before still holds ``<layer>.bias``, and ``load_state_dict(strict=True)`` refuses it.

``convert_checkpoint`` folds each such bias into the running mean of the BatchNorms it feeds,
exactly as the BN001 fix does to a model (``bias_before_bn.fix``, on the old weights loaded
into the fixed model with the bias put back), and drops the bias: the old weights then load
into the fixed code and compute what they did, in training and in eval mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from bnlint.graph import BIASED_LAYER_TYPES
from bnlint.rules import bias_before_bn
from bnlint.trace import trace_model


class CheckpointError(ValueError):
    """The checkpoint does not fit the fixed model, or a bias cannot be folded exactly."""


def build_model(spec: str) -> nn.Module:
    """The one model a spec (``file.py:EXPR``, ``package.module:EXPR`` or a file defining a
    single model) builds."""
    from bnlint.load import LoadError, build, load

    loaded = load([spec])
    problems = [f"{r.spec}: {r.reason}" for r in loaded.results if r.status == "error"]
    if problems:
        raise CheckpointError(problems[0])
    if len(loaded.candidates) != 1:
        names = ", ".join(c.spec for c in loaded.candidates) or "none"
        raise CheckpointError(f"{spec} must name one model; it defines {names}. Name it as "
                              "file.py:EXPR")
    try:
        return build(loaded.candidates[0])[0]
    except LoadError as exc:
        raise CheckpointError(f"{spec}: {exc}") from None


def convert_checkpoint(fixed_model_or_spec: nn.Module | str,
                       state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict for the fixed model made from one saved before the fix.

    ``fixed_model_or_spec``: the model as the fixed code builds it, or a spec that builds it.
    Each ``<layer>.bias`` of ``state_dict`` whose layer has no bias in the fixed model is
    folded into the running mean of the BatchNorms the layer feeds, and left out. Every other
    entry must match the fixed model, which loads the result with ``strict=True``. Raises
    ``CheckpointError`` when the checkpoint does not fit or a bias still matters.
    """
    model = (build_model(fixed_model_or_spec) if isinstance(fixed_model_or_spec, str)
             else fixed_model_or_spec)
    old = copy.deepcopy(model)
    restored = []
    for name, module in old.named_modules():
        key = f"{name}.bias" if name else "bias"
        if key in state_dict and isinstance(module, BIASED_LAYER_TYPES) and module.bias is None:
            module.bias = nn.Parameter(torch.empty_like(state_dict[key]))
            restored.append(name)
    expected = old.state_dict()
    missing, unexpected = expected.keys() - state_dict.keys(), state_dict.keys() - expected.keys()
    resized = {k for k in expected.keys() & state_dict.keys()
               if tuple(expected[k].shape) != tuple(state_dict[k].shape)}
    if missing or unexpected or resized:
        parts = [f"{label} {', '.join(sorted(keys)[:3])}{' and more' * (len(keys) > 3)}"
                 for label, keys in (("it lacks", missing), ("it has no place for", unexpected),
                                     ("it has other shapes for", resized)) if keys]
        raise CheckpointError("the checkpoint does not fit the fixed model apart from removed "
                              f"biases: {'; '.join(parts)}")
    old.load_state_dict(state_dict, strict=True)
    _fold(old, restored)
    return old.state_dict()


def _fold(model: nn.Module, names: list[str]) -> None:
    """Fold the bias of each named layer into the running means it reaches, in place."""
    traced = trace_model(model)
    for name in names:
        calls = [(unit, node) for unit in traced.units for node in unit.gm.graph.nodes
                 if node.op == "call_module"
                 and (f"{unit.prefix}.{node.target}" if unit.prefix else node.target) == name]
        if len({id(unit) for unit, _ in calls}) != 1:
            why = ("it is not called in any part of the model bnlint could trace" if not calls
                   else "it is called in more than one traced part of the model")
            raise CheckpointError(f"`{name}.bias` cannot be folded: {why}")
        unit, node = calls[0]
        hit = next((h for h in bias_before_bn.check(unit.gm, unit.prefix) if h.anchor is node),
                   None)
        reason = ("its output does not only feed BatchNorm in the fixed model, so the bias "
                  "still matters") if hit is None else bias_before_bn.fix(unit.gm, hit)
        if reason is not None:
            raise CheckpointError(f"`{name}.bias` cannot be folded: {reason}")
