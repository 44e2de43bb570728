"""BN001: a conv/linear layer with a bias feeds BatchNorm.

BatchNorm subtracts the per-channel mean of its input, so a per-channel constant added before
it cancels out: the bias gets gradients of zero and only shifts the running mean.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx, nn

from bnlint import graph
from bnlint.edits import Edit, add_argument, callee_name, span_of
from bnlint.findings import SAFE, Hit

CODE = "BN001"
SHARED = ("this layer is also called where its output does not feed BatchNorm, and the bias"
          " matters there")


def bias_paths(gm: fx.GraphModule, layer: fx.Node) -> tuple[list[fx.Node], list[fx.Node]] | None:
    """Follow the layer's output forward through ops that keep a per-channel shift.

    Returns ``(batchnorms, via)``: the BatchNorm nodes that end every path and the ops passed
    on the way, or ``None`` when some path ends elsewhere (there the bias still matters).
    """
    batchnorms: list[fx.Node] = []
    via: list[fx.Node] = []
    frontier = [layer]
    seen: set[fx.Node] = set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        if not node.users:
            return None
        for user in node.users:
            if graph.is_batchnorm(gm, user) and graph.tensor_input(user) is node:
                batchnorms.append(user)
            elif graph.carries_bias_shift(gm, user) and node in graph.node_inputs(user):
                via.append(user)
                frontier.append(user)
            else:
                return None
    return batchnorms, via


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    for node in gm.graph.nodes:
        if not graph.is_biased_layer(gm, node):
            continue
        paths = bias_paths(gm, node)
        if paths is None:
            continue
        batchnorms, via = paths
        bn_names = sorted({graph.describe(gm, bn, prefix) for bn in batchnorms})
        bn_types = sorted({graph.type_name(gm, bn) for bn in batchnorms})
        layer = graph.describe(gm, node, prefix)
        through = ""
        if via:
            through = " through " + ", ".join(dict.fromkeys(graph.describe(gm, v, prefix) for v in via))
        if all(bn.op == "call_module" for bn in batchnorms):
            into = f"{'/'.join(bn_types)} `{'`, `'.join(bn_names)}`"
        else:
            into = ", ".join(sorted({graph.label(gm, bn, prefix) for bn in batchnorms}))
        message = (
            f"{graph.label(gm, node, prefix)} has a bias, but its output goes{through} "
            f"into {into}, which subtracts the per-channel mean: the bias is dead weight. "
            f"Use bias=False."
        )
        fix = None
        if node.op == "call_module":
            fold = plan(gm, node.target)
            if isinstance(fold, Fold):
                fix = SAFE
            else:
                message += f" (Not fixable: {fold}.)"
        yield Hit(
            code=CODE,
            message=message,
            module=layer if node.op == "call_module" else None,
            related=tuple(dict.fromkeys([graph.describe(gm, v, prefix) for v in via] + bn_names)),
            anchor=node,
            fix=fix,
        )


# --- the fix -----------------------------------------------------------------------------------
#
# Dropping the bias b subtracts b from every value of a channel. BatchNorm in training mode
# subtracts the batch mean, which drops by b too, so its output is unchanged, and so is the
# update of running_var. Its running_mean update moves to running_mean - b, so subtracting b
# from running_mean once keeps eval mode unchanged for ever after. The walk below works out
# which multiple of b reaches each BatchNorm, and in which layout.


@dataclass(frozen=True)
class Fold:
    """How to drop one layer's bias without changing the model: for each BatchNorm (by
    target) the bias reaches, how many times it arrives (a residual ``x - y`` counts -1) and how
    often each value repeats along the BatchNorm's channels (a flatten from dim 1 turns C
    channels of H*W positions into C*H*W features)."""

    into: tuple[tuple[str, int, int], ...]


def _own_forward(layer: nn.Module) -> str | None:
    """The name of a subclass method that replaces torch's use of ``self.bias``, if any."""
    for name in ("forward", "_conv_forward"):
        method = getattr(type(layer), name, None)
        if method is not None and not method.__module__.startswith("torch.nn."):
            return name
    return None


def plan(gm: fx.GraphModule, target: str) -> Fold | str:
    """The fold that removes the bias of the layer at ``target`` exactly, or why there is none.

    Covered: every call of the layer reaches only BatchNorm modules, directly or through max
    or adaptive pooling, average pooling without padding, flatten from dim 1, identity, and
    residual additions or subtractions; each of those BatchNorms is called only on values that
    carry the same multiple of the bias (or keeps no running statistics), and has as many
    channels as the layer has outputs (times the positions a flatten folded into them). A
    Linear's bias lies along its last dimension, which is BatchNorm1d's channel dimension when
    its input is (batch, features), the shape ``BatchNorm1d(out_features)`` implies.
    """
    layer = gm.get_submodule(target)
    own = _own_forward(layer)
    if own is not None:
        return (f"`{type(layer).__name__}` defines its own `{own}`, so how it uses the bias is "
                "unknown")
    if nn.parameter.is_lazy(layer.bias):
        return "the layer is lazy and not initialised yet"
    if any(n.op == "get_attr" and n.target == f"{target}.bias" for n in gm.graph.nodes):
        return "forward() also reads the bias directly"
    calls = graph.calls_of(gm, target)
    if any(bias_paths(gm, call) is None for call in calls):
        return SHARED
    along_last = isinstance(layer, (nn.Linear, nn.Bilinear))
    size = layer.out_features if along_last else layer.out_channels
    # node -> (signed number of times the bias arrives, whether a flatten came before)
    reach: dict[fx.Node, tuple[int, bool]] = {call: (1, False) for call in calls}
    arrivals: dict[fx.Node, tuple[int, bool]] = {}
    for node in gm.graph.nodes:
        if node in reach:
            continue
        if graph.is_batchnorm(gm, node):
            value = graph.tensor_input(node)
            if value in reach:
                if node.op != "call_module":
                    return ("it feeds a functional batch_norm; the bias folds only into "
                            "BatchNorm modules")
                arrivals[node] = reach[value]
            continue
        kind = graph.passthrough_kind(gm, node)
        operands = [(i, reach[a]) for i, a in _operands(node) if a in reach]
        if not operands or kind is None:
            continue
        flattened = {flat for _, (_, flat) in operands}
        if len(flattened) > 1:
            return "its output is added to itself before and after a flatten"
        flat = flattened.pop()
        if kind in ("add", "sub"):
            count = sum(-n if kind == "sub" and i == 1 else n for i, (n, _) in operands)
        else:
            count = operands[0][1][0]
            if kind == "pool" and (flat or along_last):
                return f"`{graph.describe(gm, node)}` pools across the values the bias is added to"
            flat = flat or kind == "flatten"
        reach[node] = (count, flat)
    into: dict[str, tuple[int, int]] = {}
    for bn_node, (count, flat) in arrivals.items():
        bn = gm.get_submodule(bn_node.target)
        channels = bn.num_features
        if channels != size and not (flat and not along_last and channels % size == 0):
            return (f"`{bn_node.target}` has {channels} channels and the layer {size} outputs, so "
                    "the bias is not one value per BatchNorm channel")
        fold = (count, channels // size)
        if into.setdefault(bn_node.target, fold) != fold:
            return f"`{bn_node.target}` is called on values that carry the bias differently"
    for bn_target, fold in into.items():
        if gm.get_submodule(bn_target).running_mean is None:
            continue
        for call in graph.calls_of(gm, bn_target):
            if call not in arrivals:
                return (f"`{bn_target}` is also called on values without this bias, and its "
                        "running mean is shared by all its calls")
    return Fold(tuple((bn, count, repeat) for bn, (count, repeat) in into.items()))


def _operands(node: fx.Node) -> Iterator[tuple[int, fx.Node]]:
    """(position, node) of a node's tensor operands, ``other=`` counting as position 1."""
    for i, arg in enumerate(node.args):
        if isinstance(arg, fx.Node):
            yield i, arg
    for name, i in (("input", 0), ("other", 1)):
        if isinstance(node.kwargs.get(name), fx.Node):
            yield i, node.kwargs[name]


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Drop the layer's bias and fold it into the running mean of the BatchNorms it reaches.
    Every call of a shared layer is covered at once. Returns why not, if it cannot."""
    node = hit.anchor
    if node.op != "call_module":
        return "the bias is an argument of a functional call; only layer modules are fixed"
    fold = plan(gm, node.target)
    if not isinstance(fold, Fold):
        return fold
    layer = gm.get_submodule(node.target)
    with torch.no_grad():
        bias = layer.bias.detach()
        for bn_target, count, repeat in fold.into:
            running_mean = gm.get_submodule(bn_target).running_mean
            if running_mean is not None and count:
                running_mean -= count * bias.repeat_interleave(repeat).to(running_mean.dtype)
    layer.bias = None
    return None


# --- the source fix ----------------------------------------------------------------------------

def _bias_parameter(layer_type: type) -> tuple[bool, int | None]:
    """Whether the constructor takes ``bias``, and its position if it may be passed by position."""
    try:
        parameters = list(inspect.signature(layer_type).parameters.values())
    except (TypeError, ValueError):
        return False, None
    positional = [p.name for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if "bias" in positional:
        return True, positional.index("bias")
    return any(p.name == "bias" for p in parameters), None


def source_edit(path: str, lines: list[str], call: ast.Call, layer_type: type) -> Edit | str:
    """The edit that makes the constructor call ``call``, which built ``layer_type`` layers,
    pass ``bias=False``: an explicit ``bias`` argument (keyword or positional) becomes
    ``False``, else the keyword is added. Or why the call cannot be edited safely."""
    def edit(start, end, text):
        return Edit(path, start, end, text, CODE, SAFE,
                    "bias=False: BatchNorm after it cancels the bias")

    keyword = next((k for k in call.keywords if k.arg == "bias"), None)
    if keyword is not None:
        return edit(*span_of(keyword.value, lines), "False")
    name = layer_type.__name__
    callee = callee_name(call)
    if callee != name:
        return f"`{callee or 'the callee'}(...)` builds the {name} indirectly and passes no `bias=`"
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        return "the call passes *args or **kwargs, which may already hold the bias"
    takes_bias, index = _bias_parameter(layer_type)
    if not takes_bias:
        return f"`{name}` has no `bias` parameter"
    if index is not None and index < len(call.args):
        return edit(*span_of(call.args[index], lines), "False")
    return edit(*add_argument(lines, call, "bias=False"))
