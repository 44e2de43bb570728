"""BN002: an activation feeds BatchNorm.

The intended order is layer -> BatchNorm -> activation: BatchNorm then normalises the layer's
pre-activations, which is what keeps them in the activation's useful range.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import fx

from bnlint import graph
from bnlint.findings import UNSAFE, Hit

CODE = "BN002"


def feeding_activation(gm: fx.GraphModule, bn: fx.Node) -> tuple[fx.Node, list[fx.Node]] | None:
    """Walk back from a BatchNorm's input through dropout, pooling and reshapes.

    Returns ``(activation, via)`` if an activation produced the value, else ``None``.
    """
    via: list[fx.Node] = []
    node = graph.tensor_input(bn)
    while node is not None:
        if graph.is_activation(gm, node):
            return node, list(reversed(via))
        if not graph.carries_activation(gm, node):
            return None
        via.append(node)
        node = graph.tensor_input(node)
    return None


def feeds_only(activation: fx.Node, bn: fx.Node, via: list[fx.Node]) -> bool:
    """True when the activation's value reaches nothing but this BatchNorm."""
    chain = [activation, *via]
    for node, nxt in zip(chain, chain[1:] + [bn]):
        if set(node.users) != {nxt}:
            return False
    return True


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    for node in gm.graph.nodes:
        if not graph.is_batchnorm(gm, node):
            continue
        found = feeding_activation(gm, node)
        if found is None:
            continue
        activation, via = found
        act = graph.describe(gm, activation, prefix)
        act_type = graph.type_name(gm, activation)
        bn = graph.describe(gm, node, prefix)
        through = ""
        if via:
            through = " (through " + ", ".join(graph.describe(gm, v, prefix) for v in via) + ")"
        reorderable = feeds_only(activation, node, via)
        if reorderable:
            advice = f"Move `{bn}` before the activation (it feeds only this BatchNorm)."
        else:
            advice = (
                "A plain reorder is not possible: the activation's output also feeds other"
                " layers."
            )
        label = f"{act_type} `{act}`" if act_type != act else f"`{act}`"
        yield Hit(
            code=CODE,
            message=(
                f"{graph.type_name(gm, node)} `{bn}` normalises the output of {label}{through}; "
                f"the usual order is layer -> BatchNorm -> activation. {advice}"
            ),
            module=bn if node.op == "call_module" else None,
            related=(act, *(graph.describe(gm, v, prefix) for v in via)),
            anchor=node,
            fix=UNSAFE if reorderable and node.op == "call_module" else None,
        )
