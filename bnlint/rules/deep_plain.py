"""BN005: a deep plain network, four or more layer + activation stages with no normalisation.

Off by default: plain networks are a legitimate choice, but past a few layers they are slow to
train and sensitive to the learning rate and initialisation, which is what BatchNorm was made
to cure. The fix is the classic recipe: layer -> BatchNorm -> activation, the layer without
its bias.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.utils import parametrize

from bnlint import graph
from bnlint.findings import Hit
from bnlint.rules import Safety

CODE = "BN005"
MIN_DEPTH = 4

NORM_TYPES = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
NORM_FUNCTIONS = {
    F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm,
    F.rms_norm, torch.batch_norm, torch.layer_norm, torch.group_norm, torch.instance_norm,
}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
SELF_NORMALISING = (nn.SELU,)
SELF_NORMALISING_FUNCTIONS = {F.selu, torch.selu, F.selu_, torch.selu_}

# layer type -> the BatchNorm that normalises its output channels
_BATCHNORM_FOR = (
    ((nn.Linear, nn.Conv1d, nn.ConvTranspose1d), nn.BatchNorm1d),
    ((nn.Conv2d, nn.ConvTranspose2d), nn.BatchNorm2d),
    ((nn.Conv3d, nn.ConvTranspose3d), nn.BatchNorm3d),
)


def is_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A conv or linear layer, with or without a bias."""
    if node.op == "call_module":
        return isinstance(graph.module_of(gm, node), graph.BIASED_LAYER_TYPES)
    return node.op == "call_function" and node.target in graph.BIASED_LAYER_FUNCTIONS


def is_normalised(gm: fx.GraphModule) -> bool:
    """Any normalisation in the traced piece: a norm layer (also inside opaque submodules), a
    functional norm, or a weight- or spectral-normalised layer."""
    for module in gm.modules():
        if isinstance(module, NORM_TYPES) or parametrize.is_parametrized(module):
            return True
        if hasattr(module, "weight_g"):  # torch.nn.utils.weight_norm, the older API
            return True
    return any(n.op == "call_function" and n.target in NORM_FUNCTIONS for n in gm.graph.nodes)


def _is_self_normalising(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(graph.module_of(gm, node), SELF_NORMALISING)
    if node.op == "call_function":
        return node.target in SELF_NORMALISING_FUNCTIONS
    return node.op == "call_method" and node.target in ("selu", "selu_")


def _is_residual(node: fx.Node) -> bool:
    """A sum of two computed tensors (a skip connection), not ``x + 1``."""
    adds = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ("add", "add_"))
    return adds and len(list(graph.node_inputs(node))) >= 2


def stages(gm: fx.GraphModule) -> tuple[list[tuple[fx.Node, fx.Node]], int]:
    """The (layer, activation) pairs where an activation reads a layer's output directly, and
    the most of them on one path through the graph."""
    pairs: list[tuple[fx.Node, fx.Node]] = []
    depth: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        d = max((depth[i] for i in node.all_input_nodes), default=0)
        if graph.is_activation(gm, node):
            source = graph.tensor_input(node)
            if source is not None and is_layer(gm, source):
                pairs.append((source, node))
                d += 1
        depth[node] = d
    return pairs, max(depth.values(), default=0)


def batchnorm_for(layer: nn.Module) -> type[nn.Module] | None:
    for layer_types, batchnorm in _BATCHNORM_FOR:
        if isinstance(layer, layer_types):
            return batchnorm
    return None


def _fixable(gm: fx.GraphModule, layer: fx.Node, activation: fx.Node) -> str | None:
    """Why the fix cannot be applied to this pair, or ``None`` when it can."""
    if layer.op != "call_module":
        return "a functional layer: add a BatchNorm module by hand"
    if batchnorm_for(graph.module_of(gm, layer)) is None:
        return f"no BatchNorm fits a {graph.type_name(gm, layer)}"
    if len(graph.calls_of(gm, layer.target)) > 1:
        return "the layer is called in more than one place"
    if set(layer.users) != {activation}:
        return "the layer's output also goes elsewhere"
    return None


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    if is_normalised(gm) or any(_is_residual(n) for n in gm.graph.nodes):
        return
    pairs, depth = stages(gm)
    if depth < MIN_DEPTH or any(_is_self_normalising(gm, act) for _, act in pairs):
        return
    for layer, activation in pairs:
        name = graph.describe(gm, layer, prefix)
        act = graph.describe(gm, activation, prefix)
        reason = _fixable(gm, layer, activation)
        advice = "Insert BatchNorm between them and drop the layer's bias."
        if reason is not None:
            advice += f" (Not fixable automatically: {reason}.)"
        yield Hit(
            code=CODE,
            message=(
                f"{graph.label(gm, layer, prefix)} feeds {graph.label(gm, activation, prefix)} in a"
                f" plain network:"
                f" {depth} layer + activation stages in a row and no normalisation, which"
                f" trains slowly and only at small learning rates. {advice}"
            ),
            module=name if layer.op == "call_module" else None,
            related=(act,),
            anchor=layer,
            fix=Safety.UNSAFE if reason is None else None,
        )


def _free_name(gm: fx.GraphModule, base: str) -> str:
    existing = {name for name, _ in gm.named_modules()}
    name, n = f"{base}_bn", 1
    while name in existing:
        n += 1
        name = f"{base}_bn{n}"
    return name


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Insert BatchNorm between the hit's layer and its activation; drop the layer's bias."""
    layer = hit.anchor
    activation = next(iter(layer.users), None)
    if activation is None or (reason := _fixable(gm, layer, activation)) is not None:
        return reason or "the layer's output is unused"
    module = graph.module_of(gm, layer)
    channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    weight = module.weight
    name = _free_name(gm, layer.target)
    gm.add_submodule(name, batchnorm_for(module)(channels, device=weight.device,
                                                  dtype=weight.dtype))
    module.register_parameter("bias", None)
    with gm.graph.inserting_after(layer):
        bn = gm.graph.call_module(name, (layer,))
    activation.replace_input_with(layer, bn)
    return None
