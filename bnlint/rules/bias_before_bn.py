"""BN001: a conv/linear layer with a bias feeds BatchNorm.

BatchNorm subtracts the per-channel mean of its input, so a per-channel constant added before
it cancels out: the bias gets gradients of zero and only shifts the running mean.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import fx

from bnlint import graph
from bnlint.findings import SAFE, Hit

CODE = "BN001"


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
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
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
        message = (
            f"{graph.type_name(gm, node)} `{layer}` has a bias, but its output goes{through} "
            f"into {'/'.join(bn_types)} `{'`, `'.join(bn_names)}`, which subtracts the "
            f"per-channel mean: the bias is dead weight. Use bias=False."
        )
        fix = None
        if node.op == "call_module":
            shared = [c for c in calls[node.target] if c is not node]
            if all(bias_paths(gm, c) is not None for c in shared):
                fix = SAFE
            else:
                message += (
                    " (Not fixable: this layer is also called where its output does not feed"
                    " BatchNorm, and the bias matters there.)"
                )
        yield Hit(
            code=CODE,
            message=message,
            module=layer if node.op == "call_module" else None,
            related=tuple(dict.fromkeys([graph.describe(gm, v, prefix) for v in via] + bn_names)),
            anchor=node,
            fix=fix,
        )
