"""BN002: an activation feeds BatchNorm.

The intended order is layer -> BatchNorm -> activation: BatchNorm then normalises the layer's
pre-activations, which is what keeps them in the activation's useful range.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from torch import fx, nn

from bnlint import graph
from bnlint.edits import Edit, callee_name, offset, span_of
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.source_fixes import SourceFix, Target, ast_span
from bnlint.files import Site
from bnlint.source import recorded_site, user_function

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


def is_block_branch(gm: fx.GraphModule, bn: fx.Node, activation: fx.Node) -> bool:
    """True when the BatchNorm is one branch of a multi-branch block: its output is added to a
    branch that applies a layer and BatchNorm to the same activation output, as the identity
    branch of RepVGG, MobileOne and RepGhost blocks (``bn0(x) + bn1(conv1(x))``) or FastViT's
    RepMixer (``mixer(x) - bn0(x)``).
    That BatchNorm normalises the block's input beside its conv branches, as the first
    BatchNorm of a pre-activation block does; no layer's output waits to be normalised."""
    computed = _descendants(activation, avoid=bn)
    for node in _sums_after(gm, bn):
        for other in graph.node_inputs(node):
            if other in computed and any(
                    graph.is_batchnorm(gm, n) for n in _ancestors(other, within=computed)):
                return True
    return False


def _descendants(node: fx.Node, avoid: fx.Node) -> set[fx.Node]:
    """Nodes computed from ``node`` along paths that do not pass through ``avoid``."""
    found: set[fx.Node] = set()
    frontier = [node]
    while frontier:
        for user in frontier.pop().users:
            if user is not avoid and user not in found:
                found.add(user)
                frontier.append(user)
    return found


def _ancestors(node: fx.Node, within: set[fx.Node]) -> set[fx.Node]:
    """``node`` and the nodes of ``within`` that it is computed from."""
    found = {node}
    frontier = [node]
    while frontier:
        for source in graph.node_inputs(frontier.pop()):
            if source in within and source not in found:
                found.add(source)
                frontier.append(source)
    return found


def _sums_after(gm: fx.GraphModule, bn: fx.Node) -> Iterator[fx.Node]:
    """The sums and differences the BatchNorm's output flows into, through dropout, identity
    and other sums."""
    frontier = list(bn.users)
    seen: set[fx.Node] = set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        kind = graph.passthrough_kind(gm, node)
        if kind in ("add", "sub"):
            yield node
        if kind in ("add", "sub", "dropout", "identity"):
            frontier.extend(node.users)


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
        bn = graph.describe(gm, node, prefix)
        through = ""
        if via:
            through = " (through " + ", ".join(graph.describe(gm, v, prefix) for v in via) + ")"
        reorderable = feeds_only(activation, node, via)
        if not reorderable and is_block_branch(gm, node, activation):
            continue
        blocker = why_not_movable(gm, node, activation, via)
        if blocker is None:
            advice = f"Move `{bn}` before the activation (it feeds only this BatchNorm)."
        elif reorderable:
            advice = f"Move `{bn}` before the activation by hand ({blocker})."
        else:
            advice = (
                "A plain reorder is not possible: the activation's output also feeds other"
                " layers."
            )
        yield Hit(
            code=CODE,
            message=(
                f"{graph.label(gm, node, prefix)} normalises the output of "
                f"{graph.label(gm, activation, prefix)}{through}; "
                f"the usual order is layer -> BatchNorm -> activation. {advice}"
            ),
            module=bn if node.op == "call_module" else None,
            related=(act, *(graph.describe(gm, v, prefix) for v in via)),
            anchor=node,
            fix=Safety.UNSAFE if blocker is None else None,
        )


# --- the fix -----------------------------------------------------------------------------------

_KEEPS_CHANNELS = ("dropout", "identity", "pool")


def _is_glu(gm: fx.GraphModule, node: fx.Node) -> bool:
    """GLU halves its input; every other activation keeps the shape."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return isinstance(graph.module_of(gm, node), nn.GLU) or name in ("glu", "glu_")


def why_not_movable(gm: fx.GraphModule, bn: fx.Node, activation: fx.Node,
                    via: list[fx.Node]) -> str | None:
    """Why bnlint cannot move the BatchNorm right before the activation, or None if it can:
    the move must keep every other use of the values and the shape BatchNorm sees."""
    if bn.op != "call_module":
        return "it is a functional batch_norm call, and bnlint moves BatchNorm modules only"
    if not feeds_only(activation, bn, via):
        return "the activation's output also feeds other layers"
    if graph.tensor_input(activation) is None or _is_glu(gm, activation):
        return "the activation changes the shape of its input"
    for op in via:
        if graph.passthrough_kind(gm, op) not in _KEEPS_CHANNELS:
            return f"`{graph.describe(gm, op)}` between them changes the layout BatchNorm sees"
    layer = graph.module_of(gm, graph.tensor_input(activation))
    if any(graph.passthrough_kind(gm, op) == "pool" for op in via) and (
            getattr(layer, "out_channels", None) != gm.get_submodule(bn.target).num_features):
        return "bnlint cannot tell that the values before the pooling have BatchNorm's channels"
    return None


def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Rewire layer -> activation -> ... -> BatchNorm into layer -> BatchNorm -> activation -> ...
    The BatchNorm module and its state are kept; it now sees the activation's input, which
    changes what the model computes (hence unsafe: the model needs training again)."""
    bn = hit.anchor
    found = feeding_activation(gm, bn)
    if found is None:
        return "no activation feeds it any more"
    activation, via = found
    blocker = why_not_movable(gm, bn, activation, via)
    if blocker is not None:
        return blocker
    layer = graph.tensor_input(activation)
    bn.replace_all_uses_with(bn.args[0])
    activation.prepend(bn)
    bn.args = (layer, *bn.args[1:])
    activation.replace_input_with(layer, bn)
    return None


# --- the source fix ----------------------------------------------------------------------------

def _entries(node: ast.AST) -> list[ast.expr] | None:
    """The entries of a list or tuple literal, or the arguments of an ``nn.Sequential(...)``."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return node.elts
    if isinstance(node, ast.Call) and callee_name(node) == "Sequential" and not node.keywords:
        return node.args
    return None


def _whole_line(lines: list[str], entry: ast.expr) -> bool:
    """The entry has its lines to itself: only indentation before it, and after it a comma,
    perhaps a comment, and the end of the line."""
    first, last = lines[entry.lineno - 1], lines[entry.end_lineno - 1]
    before = first.encode("utf-8")[:entry.col_offset].decode("utf-8", errors="replace")
    after = last.encode("utf-8")[entry.end_col_offset:].decode("utf-8", errors="replace")
    return not before.strip() and re.fullmatch(r"\s*,\s*(#.*)?\s*", after) is not None


def entry_pieces(lines: list[str], tree: ast.Module, calls: list[tuple[int, int, int, int]]
                 ) -> tuple[list[tuple[tuple[int, int], tuple[int, int]]], bool] | None:
    """The text of consecutive entries of one ``nn.Sequential(...)`` or list literal
    (``calls``: their ast line/column spans, in order), as ``(start, end)`` pieces, and whether
    they are whole lines: entries on lines of their own are taken with their lines (and
    comments), entries sharing a line as their own spans. ``None`` when they are not such
    entries."""
    for node in ast.walk(tree):
        entries = _entries(node)
        if not entries:
            continue
        spans = [(e.lineno, e.col_offset, e.end_lineno, e.end_col_offset) for e in entries]
        if calls[0] not in spans:
            continue
        first = spans.index(calls[0])
        moved = entries[first:first + len(calls)]
        if spans[first:first + len(calls)] != calls:
            return None
        if all(_whole_line(lines, e) for e in moved):
            return [((e.lineno, 0), (e.end_lineno + 1, 0)) for e in moved], True
        return [span_of(e, lines) for e in moved], False
    return None


def rotate_entries(lines: list[str], tree: ast.Module, calls: list[tuple[int, int, int, int]],
                   shift: int) -> list[tuple[tuple[int, int], tuple[int, int], str]] | None:
    """``(start, end, text)`` replacements that rotate consecutive entries (``entry_pieces``)
    by ``shift`` places: 1 brings the last one first, -1 sends the first one last; entries
    sharing a line trade places and leave the commas and comments where they are."""
    found = entry_pieces(lines, tree, calls)
    if found is None:
        return None
    pieces = found[0]
    text = "".join(lines)
    texts = [text[offset(lines, start):offset(lines, end)] for start, end in pieces]
    rotated = texts[-shift:] + texts[:-shift]
    return [(start, end, new) for (start, end), new in zip(pieces, rotated)]


def source_edits(path: str, lines: list[str], tree: ast.Module,
                 calls: list[tuple[int, int, int, int]]) -> list[Edit] | str:
    """Edits that move the BatchNorm before the activation where the constructor calls of the
    activation, the ops between and the BatchNorm (``calls``: their ast line/column spans, in
    that order) are consecutive entries of one ``nn.Sequential(...)`` or list literal
    (``rotate_entries``)."""
    rotated = rotate_entries(lines, tree, calls, 1)
    if rotated is None:
        return ("the activation and the BatchNorm are not next to each other in one "
                "nn.Sequential or list; move the BatchNorm before the activation by hand")
    return [Edit(path, start, end, new, CODE, Safety.UNSAFE,
                 "BatchNorm before the activation (retrain the model)")
            for start, end, new in rotated]


# --- the same fix in a forward() ----------------------------------------------------------------

class Step(NamedTuple):
    """How forward() writes one op of the chain: a module (``self.act(x)``, ``name`` is
    ``self.act``), a function (``F.relu(x, ...)``, ``name`` is ``relu``) or a method
    (``x.relu()``, ``name`` is ``relu``)."""

    kind: str  # "module" | "function" | "method"
    name: str


def forward_steps(related: tuple[str, ...], bn: str, owner: str,
                  is_module: Callable[[str], bool]) -> tuple[Step, ...] | str:
    """The steps of activation, ops between and BatchNorm as the forward of the module at
    ``owner`` writes them; ``related`` and ``bn`` as a finding names them."""
    steps = []
    for name in (*related, bn):
        if name.startswith(".") and name.endswith("()"):
            steps.append(Step("method", name[1:-2]))
        elif not is_module(name):
            steps.append(Step("function", name.rpartition(".")[2]))
        elif owner and not name.startswith(owner + "."):
            return f"`{name}` is not a layer of `{owner}`, whose forward calls the BatchNorm"
        else:
            steps.append(Step("module", "self." + name.removeprefix(owner + ".").lstrip(".")))
    return tuple(steps)


def _slot(step: Step, node: ast.AST) -> ast.expr | None:
    """The input of ``node`` if it is a call written as ``step``, else None."""
    if not isinstance(node, ast.Call) or any(isinstance(a, ast.Starred) for a in node.args):
        return None
    if step.kind == "method":
        func = node.func
        return func.value if isinstance(func, ast.Attribute) and func.attr == step.name else None
    if not node.args:
        return None
    if step.kind == "module":
        return node.args[0] if ast.unparse(node.func) == step.name else None
    return node.args[0] if callee_name(node) == step.name else None


def _chains(function: ast.FunctionDef, steps: tuple[Step, ...]) -> list[list[tuple]]:
    """Every place ``function`` applies ``steps`` in order, each as [(call, input, nested)]
    from the activation to the BatchNorm. ``nested``: the call is written inside the next
    one; otherwise it is the whole value of an assignment to the name the next call takes,
    in the statement just before that call's."""
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}

    def previous_statement(node: ast.AST) -> ast.stmt | None:
        while not isinstance(node, ast.stmt):
            node = parents[node]
        for _, value in ast.iter_fields(parents.get(node, function)):
            if isinstance(value, list) and node in value:
                index = value.index(node)
                return value[index - 1] if index else None
        return None

    found = []
    *before, last = steps
    for call in ast.walk(function):
        slot = _slot(last, call)
        if slot is None or len(call.args) != 1 or call.keywords:
            continue
        chain = [(call, slot, False)]
        for step in reversed(before):
            current, value, _ = chain[-1]
            inner = _slot(step, value)
            if inner is not None:
                chain.append((value, inner, True))
                continue
            assigned = previous_statement(current) if isinstance(value, ast.Name) else None
            if not (isinstance(assigned, ast.Assign) and len(assigned.targets) == 1
                    and isinstance(assigned.targets[0], ast.Name)
                    and assigned.targets[0].id == value.id):
                break
            inner = _slot(step, assigned.value)
            if inner is None:
                break
            chain.append((assigned.value, inner, False))
        else:
            found.append(chain[::-1])
    return found


def forward_edits(path: str, lines: list[str], function: ast.FunctionDef,
                  steps: tuple[Step, ...]) -> list[Edit] | str:
    """Edits that move the BatchNorm before the activation where ``function`` (a forward)
    calls activation, ops between and BatchNorm (``steps``) on each other's output: nested,
    ``self.bn(self.act(self.conv(x)))`` -> ``self.act(self.bn(self.conv(x)))``, or in
    consecutive assignments, ``x = self.act(x)`` / ``x = self.bn(x)`` -> ``x = self.bn(x)`` /
    ``x = self.act(x)``. Each call keeps its other arguments; what each statement assigns and
    the activation's own input stay where they are."""
    chains = _chains(function, steps)
    if len(chains) != 1:
        return ("`forward` calls the BatchNorm on the activation's output in more than one "
                "place" if chains else "bnlint moves a BatchNorm call written around the "
                "activation's call or in the statement right after it, and this one is neither")
    chain = chains[0]
    text = "".join(lines)

    def bounds(node: ast.AST) -> tuple[int, int]:
        start, end = span_of(node, lines)
        return offset(lines, start), offset(lines, end)

    # each call around its input, as (text before it, text after it)
    wrappers = []
    for call, value, _ in chain:
        (start, end), (inner_start, inner_end) = bounds(call), bounds(value)
        wrappers.append((text[start:inner_start], text[inner_end:end]))
    wrappers = [wrappers[-1], *wrappers[:-1]]  # the BatchNorm first, the rest one place on
    edits, written = [], None
    for (call, value, nested), (before, after) in zip(chain, wrappers):
        if written is None:
            start, end = bounds(value)
            written = text[start:end]
        written = before + written + after
        if not nested:  # the top of one statement's calls: replace them
            start, end = span_of(call, lines)
            edits.append(Edit(path, start, end, written, CODE, Safety.UNSAFE,
                              "BatchNorm before the activation (retrain the model)"))
            written = None
    return edits


# --- where the source fix goes ------------------------------------------------------------------

def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def entry_sites(model, finding) -> tuple[Site, ...] | None:
    """Where the modules a finding names besides its BatchNorm were built (BN002: the
    activation and the ops between; BN008: the dropout, the ops between and the activation
    after), if all are modules."""
    sites = []
    for name in finding.related:
        site = recorded_site(model.get_submodule(name)) if _has_module(
            model, name) else None
        if site is None:
            return None
        sites.append(site)
    return tuple(sites)


def _function_node(tree: ast.Module, function) -> ast.FunctionDef | None:
    """The definition of ``function`` in its file's tree."""
    first = function.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                node.name == function.__name__
                and first in (node.lineno, *(d.lineno for d in node.decorator_list))):
            return node
    return None


class _SourceFix(SourceFix):
    """An activation and its BatchNorm built as neighbouring entries of one
    ``nn.Sequential(...)`` or list trade places; where the module's own forward calls them
    (nested, or in consecutive assignments), the calls are rewritten, if that forward runs
    nowhere the fix does not apply."""

    kept = "it keeps its place"
    kept_in_forward = "the BatchNorm keeps its place"

    def target(self, fixer, spec, model, finding, site):
        owner, _, attr = finding.module.rpartition(".")
        forward = type(model.get_submodule(owner)).forward
        if not user_function(forward):
            return Target(site, variant=entry_sites(model, finding))
        steps = forward_steps(finding.related, finding.module, owner,
                              lambda name: _has_module(model, name))
        return Target(forward, attr, steps, steps if isinstance(steps, str) else None)

    def edits(self, fixer, group, path, lines, tree):
        in_call = isinstance(group.where, Site)
        if len(group.variants) != 1 or None in group.variants:
            return ("the activation is not a layer built next to the BatchNorm; move the "
                    "BatchNorm before the activation by hand" if in_call else
                    "`forward` calls different layers in different models")
        variant = next(iter(group.variants))
        if in_call:
            return source_edits(path, lines, tree, [*map(ast_span, variant),
                                                    ast_span(group.where)])
        function = _function_node(tree, group.where)
        if function is None:
            return "`forward` is no longer where it was when the model was built"
        return forward_edits(path, lines, function, variant)


source_fix = _SourceFix()
