"""BN008: a dropout feeds BatchNorm.

In training, dropout zeroes a share p of the values and scales the rest by 1/(1-p); in eval it
passes them unchanged. The variance BatchNorm records in its running statistics is therefore
the training one, larger than what it normalises at inference (the "variance shift" of Li et
al., CVPR 2019). The usual order puts dropout last: layer -> BatchNorm -> activation -> dropout.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import fx, nn

from bnlint import graph
from bnlint.edits import Edit, offset
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.act_before_bn import entry_pieces, entry_sites, rotate_entries
from bnlint.rules.source_fixes import Rides, SourceFix, Target, ast_span

CODE = "BN008"
_CHANNEL_DROPOUT_TYPES = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_CHANNEL_DROPOUT_FUNCTIONS = {F.dropout1d, F.dropout2d, F.dropout3d}


def feeding_dropout(gm: fx.GraphModule, bn: fx.Node) -> tuple[fx.Node, float, list[fx.Node]] | None:
    """Walk back from a BatchNorm's input through activations, pooling, reshapes and dropout
    that drops nothing. Returns ``(dropout, p, via)`` if a dropout with p > 0 produced the
    value, else ``None``."""
    via: list[fx.Node] = []
    node = graph.tensor_input(bn)
    while node is not None:
        rate = graph.dropout_rate(gm, node)
        if rate:
            return node, rate, list(reversed(via))
        if not (graph.is_activation(gm, node) or graph.carries_activation(gm, node)):
            return None
        via.append(node)
        node = graph.tensor_input(node)
    return None


def block_end(gm: fx.GraphModule, bn: fx.Node) -> fx.Node:
    """The last op of the BatchNorm's block: the activation that alone reads its output, if
    any, else the BatchNorm itself. The dropout goes after it."""
    users = list(bn.users)
    if len(users) == 1 and graph.is_activation(gm, users[0]) and (
            graph.tensor_input(users[0]) is bn):
        return users[0]
    return bn


@dataclass(frozen=True)
class Move:
    dropout: fx.Node
    after: fx.Node


def plan(gm: fx.GraphModule, bn: fx.Node) -> Move | str | None:
    """Where the dropout feeding ``bn`` can go: right after the BatchNorm's block; or why it
    cannot move; ``None`` when no dropout feeds it (any more)."""
    found = feeding_dropout(gm, bn)
    if found is None:
        return None
    dropout, _, via = found
    chain = [dropout, *via]
    for node, nxt in zip(chain, [*via, bn]):
        if set(node.users) != {nxt}:
            what = "the dropout's" if node is dropout else f"`{graph.describe(gm, node)}`'s"
            return f"{what} output also feeds other ops"
    channel = isinstance(graph.module_of(gm, dropout), _CHANNEL_DROPOUT_TYPES) or (
        dropout.target in _CHANNEL_DROPOUT_FUNCTIONS)
    reshape = next((n for n in via if graph.passthrough_kind(gm, n) in ("flatten", "reshape")),
                   None)
    if channel and reshape is not None:
        return (f"it drops whole channels, and after `{graph.describe(gm, reshape)}` the values "
                "have another layout")
    return Move(dropout, block_end(gm, bn))


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    for node in gm.graph.nodes:
        if not graph.is_batchnorm(gm, node):
            continue
        found = feeding_dropout(gm, node)
        if found is None:
            continue
        dropout, rate, via = found
        move = plan(gm, node)
        bn = graph.describe(gm, node, prefix)
        drop = graph.describe(gm, dropout, prefix)
        through = ""
        if via:
            through = " through " + ", ".join(graph.label(gm, v, prefix) for v in via)
        after = [move.after] if isinstance(move, Move) and move.after is not node else []
        if isinstance(move, Move):
            advice = f"Move `{drop}` after `{bn}`" + "".join(
                f" and `{graph.describe(gm, a, prefix)}`" for a in after) + "."
        else:
            advice = f"Move `{drop}` after `{bn}` by hand ({move})."
        yield Hit(
            code=CODE,
            message=(
                f"{graph.label(gm, node, prefix)} normalises the output of "
                f"{graph.label(gm, dropout, prefix)} (p={rate:g}){through}: in training, dropout "
                f"zeroes values and scales the rest by 1/(1-p), in eval it does neither, so the "
                f"running statistics BatchNorm uses at inference describe other values. {advice}"
            ),
            module=bn if node.op == "call_module" else None,
            related=(drop, *(graph.describe(gm, v, prefix) for v in via),
                     *(graph.describe(gm, a, prefix) for a in after)),
            anchor=node,
            fix=Safety.UNSAFE if isinstance(move, Move) else None,
        )


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Rewire dropout -> ... -> BatchNorm [-> activation] into ... -> BatchNorm [-> activation]
    -> dropout. The dropout keeps its settings; BatchNorm now sees values without it, which
    changes what the model computes in training (hence unsafe). Nothing is left to do where an
    earlier fix (BN002's reorder of activation -> dropout -> BatchNorm) moved the dropout."""
    move = plan(gm, hit.anchor)
    if move is None or isinstance(move, str):
        return move
    dropout, after = move.dropout, move.after
    source = graph.tensor_input(dropout)
    dropout.replace_all_uses_with(source)
    users = list(after.users)
    after.append(dropout)
    dropout.replace_input_with(source, after)
    for user in users:
        user.replace_input_with(after, dropout)
    return None


# --- the source fix ----------------------------------------------------------------------------

def source_edits(path: str, lines: list[str], tree: ast.Module,
                 calls: list[tuple[int, int, int, int]],
                 reordered: set[tuple[int, int, int, int]] = frozenset()) -> list[Edit] | str:
    """Edits that move the dropout after the BatchNorm's block where the constructor calls of
    the dropout, the ops between, the BatchNorm and the activation after it (``calls``: their
    ast line/column spans) are consecutive entries of one ``nn.Sequential(...)`` or list: the
    dropout's lines move below the block's, or entries sharing a line trade places.
    ``reordered``: the spans of the entries a reorder of the same BatchNorm moves (BN002's
    activation -> dropout -> BatchNorm -> BatchNorm -> activation -> dropout); when it moves
    the dropout there is nothing left to edit, and the result is ``[]``. The dropout's own
    lines are all these edits touch of the block, so BN002's reorder of dropout -> activation
    -> BatchNorm goes in beside them."""
    calls = sorted(calls)
    if calls[0] in reordered:
        return []
    found = entry_pieces(lines, tree, calls)
    if found is None:
        return ("the dropout and the BatchNorm are not next to each other in one nn.Sequential "
                "or list; move the dropout after the BatchNorm by hand")
    pieces, whole_lines = found
    if whole_lines:
        (start, end), below = pieces[0], pieces[-1][1]
        text = "".join(lines)[offset(lines, start):offset(lines, end)]
        moves = [(start, end, ""), (below, below, text)]
    else:
        moves = rotate_entries(lines, tree, calls, -1)
    return [Edit(path, start, end, text, CODE, Safety.UNSAFE,
                 "dropout after the BatchNorm block (retrain the model)")
            for start, end, text in moves]


class _SourceFix(SourceFix):
    """A dropout built as the entry before its BatchNorm (or before the ops between) moves
    after the BatchNorm's block; where BN002's reorder of the same BatchNorm moves the dropout
    already, that edit fixes both."""

    kept = "no dropout feeds it"

    def target(self, fixer, spec, model, finding, site):
        return Target(site, variant=entry_sites(model, finding))

    def edits(self, fixer, group, path, lines, tree):
        variants, site = group.variants, group.where
        if len(variants) != 1 or None in variants:
            return ("the dropout is not a layer built next to the BatchNorm; move it after the "
                    "BatchNorm by hand")
        reorder = fixer.group("BN002", site)
        reordered = set()
        if reorder is not None and len(reorder.variants) == 1 and None not in reorder.variants:
            reordered = set(map(ast_span, next(iter(reorder.variants))))
        edits = source_edits(site.path, lines, tree,
                             [*map(ast_span, next(iter(variants))), ast_span(site)], reordered)
        return Rides("BN002", "BN002's reorder of the BatchNorm moves the dropout") if (
            edits == []) else edits


source_fix = _SourceFix()
