"""BN006: BatchNorm1d on (batch, length, features) values normalises the positions.

BatchNorm1d normalises dim 1. Sequence layers (Linear on 3-D input, Embedding, batch-first
RNNs, attention and transformer layers) put the features last, so dim 1 holds the positions:
each position gets its own mean and variance, taken over the batch and the features.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Iterator
from dataclasses import dataclass

from torch import fx, nn

from bnlint import graph
from bnlint.edits import Edit, offset, span_of
from bnlint.findings import Hit
from bnlint.rules import Safety
from bnlint.rules.source_fixes import MOVED, SourceFix, Target, call_at

CODE = "BN006"
_BATCHNORMS_1D = (nn.BatchNorm1d, nn.LazyBatchNorm1d, nn.SyncBatchNorm)
_TRANSFORMERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                 nn.TransformerEncoder, nn.TransformerDecoder)


@dataclass(frozen=True)
class Producer:
    """A layer (its call) whose output has its ``features`` last. ``sequence``: a sequence
    layer (RNN, attention, transformer), whose output is (batch, length, features) by design;
    a Linear or an Embedding gives 2-D output on 2-D input (one vector or id per example)."""

    layer: fx.Node
    features: int
    sequence: bool


def _batch_first(module: nn.Module) -> bool:
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)):
        module = module.layers[0]
    attention = getattr(module, "self_attn", module)
    return bool(getattr(attention, "batch_first", False))


def producer(gm: fx.GraphModule, node: fx.Node) -> Producer | None:
    """The layer that computed ``node`` with the features last, if one did."""
    if node.op == "call_function" and node.target is operator.getitem and node.args[1:] == (0,):
        source = node.args[0]
        module = graph.module_of(gm, source) if isinstance(source, fx.Node) else None
        if isinstance(module, nn.RNNBase) and module.batch_first:
            size = module.proj_size or module.hidden_size
            return Producer(source, size * (2 if module.bidirectional else 1), True)
        if isinstance(module, nn.MultiheadAttention) and module.batch_first:
            return Producer(source, module.embed_dim, True)
        return None
    module = graph.module_of(gm, node)
    if isinstance(module, nn.Linear):
        return Producer(node, module.out_features, False)
    if isinstance(module, nn.Embedding):
        return Producer(node, module.embedding_dim, False)
    if isinstance(module, _TRANSFORMERS) and _batch_first(module):
        layer = module.layers[0] if hasattr(module, "layers") else module
        return Producer(node, layer.self_attn.embed_dim, True)
    if isinstance(module, nn.Transformer) and module.batch_first:
        return Producer(node, module.d_model, True)
    return None


def _keeps_layout(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The inputs whose layout an op passes on unchanged: dropout, identity, elementwise
    activations (not GLU, which halves the features), LayerNorm, residual sums."""
    kind = graph.passthrough_kind(gm, node)
    if kind in ("add", "sub"):
        return [n for _, n in graph.operands(node)]
    module = graph.module_of(gm, node)
    glu = isinstance(module, nn.GLU) or getattr(node.target, "__name__", node.target) in (
        "glu", "glu_")
    keeps = kind in ("dropout", "identity") or isinstance(module, nn.LayerNorm) or (
        graph.is_activation(gm, node) and not glu)
    source = graph.tensor_input(node)
    return [source] if keeps and source is not None else []


class _Graph(graph.Index):
    """``graph.Index``, and where values come from."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.sources: dict[fx.Node, Producer | None] = {}

    def source(self, node: fx.Node) -> Producer | None:
        """The features-last layer ``node``'s value comes from, unchanged in layout."""
        def rule(n: fx.Node):
            found = producer(self.gm, n)
            if found is not None:
                return (), lambda _: found
            return _keeps_layout(self.gm, n), _agreeing

        return graph.from_inputs(node, rule, self.sources)


def _agreeing(found: list[Producer | None]) -> Producer | None:
    """The producer a sum's operands share (one operand may come from elsewhere)."""
    producers = [p for p in found if p is not None]
    if not producers or len({p.features for p in producers}) > 1:
        return None
    return producers[0]


def wrong_axis(g: _Graph, bn: fx.Node) -> Producer | None:
    """The producer whose (batch, length, features) output this BatchNorm1d call normalises
    along dim 1, or ``None`` when it does not. Recorded shapes decide where there are some:
    the BatchNorm's input is 3-D and its last dim is the producer's features. Without them,
    a sequence layer's output is 3-D, and a Linear's or an Embedding's is where bnlint can
    tell its rank, or where the BatchNorm's size is not their features (2-D input would not
    fit, so it gets (batch, num_features, features))."""
    if not isinstance(g.module(bn), _BATCHNORMS_1D):
        return None
    value = graph.tensor_input(bn)
    found = g.source(value) if value is not None else None
    if found is None:
        return None
    shape = graph.shape_of(value)
    if shape is not None:
        return found if len(shape) == 3 and shape[-1] == found.features else None
    rank = g.rank(value)
    if rank is not None:
        return found if rank == 3 else None
    channels = graph.batchnorm_channels(g.module(bn))
    if found.sequence or (channels is not None and channels != found.features):
        return found
    return None


LAYER_NORM, TRANSPOSE = "layer_norm", "transpose"


def plan(g: _Graph, target: str) -> tuple[str, int, list[fx.Node]] | str:
    """How to fix the BatchNorm at ``target``: ``(LAYER_NORM, C, calls)`` when every call of
    it gets features-last values (C features), ``(TRANSPOSE, C, calls)`` with the calls to
    wrap when it also normalises values whose features are in dim 1 (it then has C channels
    already), or why neither fits."""
    calls = g.nodes("call_module", target)
    wrong = {call: wrong_axis(g, call) for call in calls}
    flagged = [call for call, found in wrong.items() if found is not None]
    features = {wrong[call].features for call in flagged}
    if not features:
        return "it does not get features-last values any more"
    if len(features) > 1:
        sizes = " and ".join(map(str, sorted(features)))
        return f"`{target}` is called on values with {sizes} features"
    size = features.pop()
    if len(flagged) == len(calls):
        return LAYER_NORM, size, flagged
    channels = graph.batchnorm_channels(g.module(calls[0]))
    if channels == size:
        return TRANSPOSE, size, flagged
    return (f"`{target}` is also called on values with their features in dim 1, and has "
            f"{channels} channels where these values have {size} features")


def check(gm: fx.GraphModule, prefix: str = "") -> Iterator[Hit]:
    """Hits in one traced piece; ``prefix`` is its qualified name in the whole model."""
    g = _Graph(gm)
    plans: dict[str, tuple | str] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        found = wrong_axis(g, node)
        if found is None:
            continue
        bn = graph.describe(gm, node, prefix)
        layer = graph.describe(gm, found.layer, prefix)
        channels = graph.batchnorm_channels(g.module(node))
        size = f"its {channels} channels" if channels is not None else "its channels"
        features = found.features
        message = (
            f"{graph.type_name(gm, node)} `{bn}` normalises dim 1 of (batch, length, features) "
            f"values from {graph.type_name(gm, found.layer)} `{layer}`: {size} are positions, "
            f"so it normalises each position over the batch and the {features} features "
            f"instead of each feature. Use nn.LayerNorm({features}), or "
            f"BatchNorm1d({features}) on x.transpose(1, 2).")
        if node.target not in plans:
            plans[node.target] = plan(g, node.target)
        how = plans[node.target]
        if isinstance(how, str):
            message += f" (Not fixable: {how}.)"
        yield Hit(
            code=CODE,
            message=message,
            module=bn,
            related=(layer,),
            anchor=node,
            fix=None if isinstance(how, str) else Safety.UNSAFE,
        )


# --- the fix -----------------------------------------------------------------------------------

def fix(gm: fx.GraphModule, hit: Hit) -> str | None:
    """Replace the BatchNorm with ``nn.LayerNorm(C)`` when every call of it gets features-last
    values (its calls become new nodes calling the new module, so the traced piece counts as
    rewritten and the fixed model gets its graph), or wrap its features-last calls in
    ``transpose(1, 2)`` when it also normalises values with their features in dim 1. Unsafe:
    the model normalises differently and must be trained again."""
    target = hit.anchor.target
    how = plan(_Graph(gm), target)
    if isinstance(how, str):
        return how
    kind, size, calls = how
    if kind == LAYER_NORM:
        bn = gm.get_submodule(target)
        state = next((t for t in (bn.weight, bn.running_mean) if t is not None), None)
        gm.add_submodule(target, nn.LayerNorm(
            size, eps=bn.eps, elementwise_affine=bn.affine,
            device=None if state is None else state.device,
            dtype=None if state is None else state.dtype))
        for call in calls:
            with gm.graph.inserting_after(call):
                new = gm.graph.create_node("call_module", target, call.args, call.kwargs,
                                           name="layer_norm")
            call.replace_all_uses_with(new)
            gm.graph.erase_node(call)
        return None
    for call in calls:
        value = graph.tensor_input(call)
        with gm.graph.inserting_before(call):
            features_first = gm.graph.call_method("transpose", (value, 1, 2))
        call.replace_input_with(value, features_first)
        with gm.graph.inserting_after(call):
            features_last = gm.graph.call_method("transpose", (call, 1, 2))
        call.replace_all_uses_with(features_last, delete_user_cb=lambda n: n is not features_last)
    return None


# --- the source fix ----------------------------------------------------------------------------

# BatchNorm1d(num_features, eps, momentum, affine, track_running_stats, device, dtype)
_POSITIONS = ("num_features", "eps", "momentum", "affine", "track_running_stats", "device",
              "dtype")
_KEPT = {"eps": "eps", "affine": "elementwise_affine", "device": "device", "dtype": "dtype"}


def source_edit(path: str, lines: list[str], call: ast.Call, size: int) -> Edit | str:
    """The edit that turns the constructor call ``call`` of a BatchNorm1d into
    ``nn.LayerNorm(size)``, keeping ``eps``, ``affine`` (as ``elementwise_affine``),
    ``device`` and ``dtype``; or why it cannot."""
    if not isinstance(call.func, ast.Attribute) or call.func.attr != "BatchNorm1d":
        return ("the call is not written `<module>.BatchNorm1d(...)`, so bnlint cannot tell how "
                "to name LayerNorm there")
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
            k.arg is None for k in call.keywords):
        return "the call passes *args or **kwargs"
    text = "".join(lines)

    def source(node: ast.AST) -> str:
        start, end = span_of(node, lines)
        return text[offset(lines, start):offset(lines, end)]

    given = {**dict(zip(_POSITIONS, call.args)), **{k.arg: k.value for k in call.keywords}}
    arguments = [str(size)] + [f"{_KEPT[name]}={source(given[name])}"
                               for name in _POSITIONS if name in _KEPT and name in given]
    start, end = span_of(call, lines)
    return Edit(path, start, end, f"{source(call.func.value)}.LayerNorm({', '.join(arguments)})",
                CODE, Safety.UNSAFE, "LayerNorm over the features (retrain the model)")


class _SourceFix(SourceFix):
    """The call that built a BatchNorm1d the graph fix replaced with a LayerNorm builds
    ``nn.LayerNorm(C)`` instead; a BatchNorm the graph fix wraps in transposes is described."""

    kept = "it normalises its features already"

    def from_fixed(self, model, name):
        """The size of the LayerNorm that replaced the BatchNorm ``name`` (None: the fixed
        model wraps it in transposes instead)."""
        shape = getattr(model.get_submodule(name), "normalized_shape", None)
        return shape[0] if shape else None

    def target(self, fixer, spec, model, finding, site):
        return Target(site, variant=fixer.fixed_variants.get((CODE, spec, finding.module)))

    def edits(self, fixer, group, path, lines, tree):
        sizes = group.variants
        if None in sizes:
            return ("the BatchNorm also normalises values with their features in dim 1, so the "
                    "fixed model wraps its other calls in transpose(1, 2); do that in forward() "
                    "by hand")
        if len(sizes) != 1:
            return "the call builds BatchNorms for values with different numbers of features"
        call = call_at(tree, group.where)
        if call is None:
            return MOVED
        edit = source_edit(path, lines, call, next(iter(sizes)))
        return edit if isinstance(edit, str) else [edit]


source_fix = _SourceFix()
