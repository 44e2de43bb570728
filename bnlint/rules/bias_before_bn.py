"""BN001: a conv/linear layer with a bias feeds BatchNorm.

BatchNorm subtracts the per-channel mean of its input, so a per-channel constant added before
it cancels out: the bias gets gradients of zero and only shifts the running mean.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from bnlint import graph
from bnlint.edits import Edit, add_argument, callee_name, span_of
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.source_fixes import SourceFix, call_of_one_class

CODE = "BN001"
# the fix changes module state (a bias, a running mean), never the graph, so it holds on every
# path through a forward, also on one recorded on a single path
STATE_ONLY = True
SHARED = ("this layer is also called where its output does not feed BatchNorm, and the bias"
          " matters there")
ACROSS = ("this layer is also called where BatchNorm normalises another dimension than the one"
          " its bias lies along, and the bias matters there")
_CARRIED = {"add", "sub", "pool", "identity", "flatten"}  # passthrough kinds that keep a shift


@dataclass(frozen=True)
class Along:
    """Where a layer's bias lies in a value computed from the layer's output.

    ``axis`` is the dimension the bias varies along, counted from the front, or from the back
    when negative (a Linear's last dimension, where the rank is not known); ``rank`` is the
    value's rank where known. A flatten from dim 1 ``spread``s the bias over dim 1 as
    ``(outer, inner)``: each value repeated ``inner`` times in a row, the whole ``outer``
    times (``None``: as many times as the BatchNorm's channels imply).
    """

    axis: int
    rank: int | None
    spread: tuple[int | None, int | None] | None = None


@dataclass
class Reach:
    """Where the bias of some calls of a layer goes: for each BatchNorm it arrives at, how
    many times (a residual ``x - y`` counts -1) and where it lies there; the ops passed on the
    way, in graph order; and, when a sum adds the bias to itself in two layouts, that fact.
    ``verdicts``: each BatchNorm's ``verdict``, once ``judge`` has asked."""

    arrivals: dict[fx.Node, tuple[int, Along]]
    via: list[fx.Node]
    mixed: str | None = None
    verdicts: dict[fx.Node, tuple] | None = None


def _along_at(g: graph.Index, layer: fx.Node) -> Along:
    """The bias in the layer's own output: along the channels (dim 1 of a batched conv) or
    the features (a Linear's last dim)."""
    module = g.module(layer)
    if isinstance(module, (nn.Linear, nn.Bilinear)) or layer.target is F.linear:
        rank = g.rank(layer)
        return Along(rank - 1, rank) if rank is not None else Along(-1, None)
    spatial = graph.spatial_dims(module or layer.target)
    shape = graph.shape_of(layer)
    if spatial is None:
        return Along(1, len(shape) if shape else None)
    rank = len(shape) if shape else spatial + 2  # batched, as convolutions are trained
    return Along(rank - spatial - 1, rank)


def _pooled(g: graph.Index, pool: fx.Node, along: Along) -> bool:
    """Whether a pooling works over the dimension the bias lies along (and so mixes it)."""
    k = graph.spatial_dims(g.module(pool) or pool.target)
    if k is None:
        return True
    if along.axis < 0:
        return -along.axis <= k
    return along.rank is None or along.axis >= along.rank - k


def _flattened(g: graph.Index, node: fx.Node, along: Along) -> Along:
    """``along`` after a flatten from dim 1 (``torch.flatten(x, 1)``, ``nn.Flatten()``)."""
    start, end = graph.flatten_dims(g.gm, node)
    shape = graph.shape_of(graph.tensor_input(node))
    rank = along.rank
    last = end + rank if end < 0 and rank is not None else (end if end >= 0 else None)
    if end == -1:
        new_rank = start + 1
    else:
        new_rank = rank - (last - start) if rank is not None and last is not None else None
    if along.spread is not None:
        outer, inner = along.spread
        more = math.prod(shape[2:last + 1]) if shape and last is not None else None
        inner = inner * more if inner is not None and more is not None else None
        return Along(1, new_rank, (outer, inner))
    if along.axis < 0:
        return Along(1, new_rank, (None, 1)) if end == -1 else along
    if along.axis == 0:
        return Along(0, new_rank)
    if last is not None and along.axis > last:
        return Along(along.axis - (last - start), new_rank)
    if shape is not None and last is not None:
        spread = (math.prod(shape[1:along.axis]), math.prod(shape[along.axis + 1:last + 1]))
    else:
        spread = (1 if along.axis == 1 else None, None)
    return Along(1, new_rank, spread)


def reach(g: graph.Index, calls: list[fx.Node]) -> Reach | None:
    """Follow the output of ``calls`` (of one layer) forward through ops that keep a
    per-channel shift: max and adaptive pooling, average pooling without padding, flatten
    from dim 1, identity, residual sums. ``None`` when some path ends elsewhere, or at a
    pooling that mixes the bias's values: there the bias still matters."""
    gm = g.gm
    kinds: dict[fx.Node, str] = {}
    batchnorms: dict[fx.Node, None] = {}
    frontier, seen = list(calls), set(calls)
    while frontier:
        node = frontier.pop()
        if not node.users:
            return None
        for user in node.users:
            if graph.is_batchnorm(gm, user) and graph.tensor_input(user) is node:
                batchnorms[user] = None
                continue
            kind = kinds.get(user) or graph.passthrough_kind(gm, user)
            if kind not in _CARRIED or node not in graph.node_inputs(user):
                return None
            kinds[user] = kind
            if user not in seen:
                seen.add(user)
                frontier.append(user)
    state: dict[fx.Node, tuple[int, Along]] = {call: (1, _along_at(g, call)) for call in calls}
    mixed = None
    for node in sorted(kinds):
        arriving = [(i, state[a]) for i, a in graph.operands(node) if a in state]
        kind = kinds[node]
        count, along = arriving[0][1]
        if kind in ("add", "sub"):
            count = sum(-n if kind == "sub" and i == 1 else n for i, (n, _) in arriving)
            if len({a for _, (_, a) in arriving}) > 1:
                mixed = "its output is added to itself in two layouts (before and after a flatten)"
            shape = graph.shape_of(node)
            if shape is not None and along.rank is not None and along.axis >= 0:
                along = Along(along.axis + len(shape) - along.rank, len(shape), along.spread)
        elif kind == "pool" and _pooled(g, node, along):
            return None
        elif kind == "flatten":
            along = _flattened(g, node, along)
        state[node] = (count, along)
    arrivals = {bn: state[graph.tensor_input(bn)] for bn in sorted(batchnorms)}
    return Reach(arrivals, sorted(kinds), mixed)


def _out_size(g: graph.Index, layer: fx.Node) -> int | None:
    module = g.module(layer)
    return getattr(module, "out_features", getattr(module, "out_channels", None))


DEAD, LIVE, UNKNOWN = "dead", "live", "unknown"


def verdict(g: graph.Index, layer: fx.Node, bn: fx.Node,
            along: Along) -> tuple[str, tuple[int | None, int | None] | str | None]:
    """Whether the bias, lying ``along`` in the BatchNorm's input, is one value per BatchNorm
    channel, meaning it lies along dim 1 (or was flattened into it): ``(DEAD, (outer,
    inner))`` with how it repeats over the channels, ``(LIVE, None)`` when it is not, and
    ``(UNKNOWN, why)`` for a Linear whose input rank bnlint cannot tell."""
    size, channels = _out_size(g, layer), graph.batchnorm_channels(g.module(bn))
    if along.spread is not None:
        if along.axis != 1:
            return LIVE, None
        outer, inner = along.spread
        if size is None or channels is None or (outer is None and inner is None):
            return DEAD, (outer, inner)
        if outer is not None and inner is not None:
            return (DEAD, (outer, inner)) if channels == outer * size * inner else (LIVE, None)
        known = size * (outer if outer is not None else inner)
        if channels % known:
            return LIVE, None
        return DEAD, (outer, channels // known) if inner is None else (channels // known, inner)
    axis = along.axis
    if axis < 0:
        rank = g.rank(graph.tensor_input(bn))
        spatial = graph.spatial_dims(g.module(bn))
        if rank is None and spatial is not None and spatial > 1:
            rank = spatial + 2  # BatchNorm2d takes 4-D input, BatchNorm3d 5-D
        if rank is not None:
            axis = rank + axis
    if axis >= 0:
        dead = axis == 1 and (size is None or channels is None or channels == size)
        return (DEAD, (1, 1)) if dead else (LIVE, None)
    if channels is not None and size is not None and channels != size:
        return LIVE, None  # (batch, features) input would not fit: it is (batch, L, features)
    return UNKNOWN, (
        "bnlint cannot tell whether the layer's input is (batch, features) or (batch, length, "
        "features), where BatchNorm1d normalises dim 1 and the bias matters; with an example "
        "input it records the shapes and can tell")


def judge(g: graph.Index, layer: fx.Node, found: Reach) -> dict[fx.Node, tuple]:
    """The ``verdict`` at each BatchNorm the bias of ``layer`` reaches (kept in ``found``)."""
    if found.verdicts is None:
        found.verdicts = {bn: verdict(g, layer, bn, along)
                          for bn, (_, along) in found.arrivals.items()}
    return found.verdicts


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    g = graph.Index(gm)
    plans: dict[str, Fold | str] = {}
    for node in gm.graph.nodes:
        if not graph.is_biased_layer(gm, node):
            continue
        found = reach(g, [node])
        if found is None:
            continue
        verdicts = judge(g, node, found).values()
        if any(kind == LIVE for kind, _ in verdicts):
            continue
        unknown = next((why for kind, why in verdicts if kind == UNKNOWN), None)
        bn_names = sorted({graph.describe(gm, bn, prefix) for bn in found.arrivals})
        bn_types = sorted({graph.type_name(gm, bn) for bn in found.arrivals})
        layer = graph.describe(gm, node, prefix)
        via = list(dict.fromkeys(graph.describe(gm, v, prefix) for v in found.via))
        through = " through " + ", ".join(via) if via else ""
        if all(bn.op == "call_module" for bn in found.arrivals):
            into = f"into {'/'.join(bn_types)} `{'`, `'.join(bn_names)}`"
        else:
            into = "into " + ", ".join(sorted({graph.label(gm, bn, prefix) for bn in found.arrivals}))
        named = graph.label(gm, node, prefix)
        fix = None
        if unknown is not None:
            message = (f"{named} has a bias and its output goes{through} {into}: if its "
                       "input is (batch, features), BatchNorm subtracts each feature's mean and "
                       f"the bias is dead weight (use bias=False). (Not fixable: {unknown}.)")
        else:
            message = (f"{named} has a bias, but its output goes{through} {into}, which "
                       "subtracts the per-channel mean: the bias is dead weight. Use bias=False.")
            if node.op == "call_module":
                if node.target not in plans:
                    plans[node.target] = plan(g, node.target, found)
                if isinstance(plans[node.target], Fold):
                    fix = Safety.SAFE
                else:
                    message += f" (Not fixable: {plans[node.target]}.)"
        yield Hit(
            code=CODE,
            message=message,
            module=layer if node.op == "call_module" else None,
            related=tuple(dict.fromkeys(via + bn_names)),
            anchor=node,
            fix=fix,
        )


# --- the fix -----------------------------------------------------------------------------------
#
# Dropping the bias b subtracts b from every value of a channel. BatchNorm in training mode
# subtracts the batch mean, which drops by b too, so its output is unchanged, and so is the
# update of running_var. Its running_mean update moves to running_mean - b, so subtracting b
# from running_mean once keeps eval mode unchanged for ever after. ``reach`` works out which
# multiple of b reaches each BatchNorm, and in which layout.


@dataclass(frozen=True)
class Fold:
    """How to drop one layer's bias without changing the model: for each BatchNorm (by
    target) the bias reaches, how many times it arrives, and how it lies along the
    BatchNorm's channels: each value repeated ``inner`` times in a row, the whole ``outer``
    times (a flatten from dim 1 turns C channels of H*W positions into C*H*W features, each
    value repeated H*W times; a Linear's L positions of C features into L*C, repeated L times
    as a whole)."""

    into: tuple[tuple[str, int, int, int], ...]


def plan(g: graph.Index, target: str, one_call: Reach | None = None) -> Fold | str:
    """The fold that removes the bias of the layer at ``target`` exactly, or why there is none.

    Covered: every call of the layer reaches only BatchNorm modules (see ``reach``), with the
    bias one value per BatchNorm channel (see ``verdict``); each of those BatchNorms is called
    only on values that carry the same multiple of the bias (or keeps no running statistics).
    ``one_call``: the reach of one call of the layer, if known; reused when there is no other.
    """
    gm = g.gm
    calls = g.nodes("call_module", target)
    layer = g.module(calls[0])
    own = graph.own_forward(layer)
    if own is not None:
        return (f"`{type(layer).__name__}` defines its own `{own}`, so how it uses the bias is "
                "unknown")
    if nn.parameter.is_lazy(layer.bias):
        return "the layer is lazy and not initialised yet"
    if g.nodes("get_attr", f"{target}.bias"):
        return "forward() also reads the bias directly"
    found = one_call if one_call is not None and len(calls) == 1 else reach(g, calls)
    if found is None:
        return SHARED
    if found.mixed:
        return found.mixed
    into: dict[str, tuple[int, int, int]] = {}
    verdicts = judge(g, calls[0], found)
    for bn_node, (count, _) in found.arrivals.items():
        kind, how = verdicts[bn_node]
        if kind == LIVE:
            return ACROSS
        if kind == UNKNOWN:
            return how
        if bn_node.op != "call_module":
            return "it feeds a functional batch_norm; the bias folds only into BatchNorm modules"
        if graph.batchnorm_channels(g.module(bn_node)) is None:
            return f"`{bn_node.target}` is lazy and not initialised yet"
        outer, inner = how
        if outer is None or inner is None:
            return (f"bnlint cannot tell how the flatten before `{bn_node.target}` lays the bias "
                    "out over its channels")
        fold = (count, outer, inner)
        if into.setdefault(bn_node.target, fold) != fold:
            return f"`{bn_node.target}` is called on values that carry the bias differently"
    for bn_target in into:
        if gm.get_submodule(bn_target).running_mean is None:
            continue
        for call in g.nodes("call_module", bn_target):
            if call not in found.arrivals:
                return (f"`{bn_target}` is also called on values without this bias, and its "
                        "running mean is shared by all its calls")
    return Fold(tuple((bn, *fold) for bn, fold in into.items()))


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Drop the layer's bias and fold it into the running mean of the BatchNorms it reaches.
    Every call of a shared layer is covered at once. Returns why not, if it cannot."""
    node = hit.anchor
    if node.op != "call_module":
        return "the bias is an argument of a functional call; only layer modules are fixed"
    fold = plan(graph.Index(gm), node.target)
    if not isinstance(fold, Fold):
        return fold
    layer = gm.get_submodule(node.target)
    with torch.no_grad():
        bias = layer.bias.detach()
        for bn_target, count, outer, inner in fold.into:
            running_mean = gm.get_submodule(bn_target).running_mean
            if running_mean is not None and count:
                shift = bias.repeat_interleave(inner).repeat(outer)
                running_mean -= count * shift.to(running_mean.dtype)
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
        return Edit(path, start, end, text, CODE, Safety.SAFE,
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


class _SourceFix(SourceFix):
    """The constructor call gets ``bias=False``, but only when every layer that call built, in
    every model checked, needs it: a helper that builds one conv feeding BatchNorm and one that
    does not is left alone. Checkpoints saved before hold the bias, so they need converting
    (``--convert-checkpoint``)."""

    kept = "its bias is not dead"
    breaks_checkpoints = True

    def edits(self, fixer, group, path, lines, tree):
        found = call_of_one_class(fixer, group, tree, "layers")
        if isinstance(found, str):
            return found
        edit = source_edit(path, lines, *found)
        return edit if isinstance(edit, str) else [edit]


source_fix = _SourceFix()
