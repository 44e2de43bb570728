"""Small queries on a traced graph: what a node is, where its value comes from and goes to.

Every helper takes the ``GraphModule`` that owns the node, so call_module targets can be
resolved to the module objects they call.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

BATCHNORM_FUNCTIONS = {F.batch_norm, torch.batch_norm}

BIASED_LAYER_TYPES = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
# functional layer -> position of its bias argument
BIASED_LAYER_FUNCTIONS = {
    F.linear: 2,
    F.conv1d: 2,
    F.conv2d: 2,
    F.conv3d: 2,
    F.conv_transpose1d: 2,
    F.conv_transpose2d: 2,
    F.conv_transpose3d: 2,
}

ACTIVATION_TYPES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Softsign, nn.Softshrink, nn.Hardshrink, nn.Tanhshrink, nn.LogSigmoid,
    nn.Threshold, nn.GLU,
)
_ACTIVATION_NAMES = (
    "relu", "relu6", "leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
    "mish", "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "softsign",
    "softshrink", "hardshrink", "tanhshrink", "logsigmoid", "threshold", "glu",
)
ACTIVATION_FUNCTIONS = {
    getattr(ns, name + suffix)
    for ns in (F, torch, torch.special)
    for name in _ACTIVATION_NAMES
    for suffix in ("", "_")
    if callable(getattr(ns, name + suffix, None))
}
ACTIVATION_METHODS = {name + suffix for name in _ACTIVATION_NAMES for suffix in ("", "_")}

_MAX_POOL_TYPES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
_AVG_POOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, torch.adaptive_avg_pool1d,
}
_AVG_POOL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, torch.avg_pool1d}
_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                  nn.FeatureAlphaDropout)
_DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                      F.feature_alpha_dropout, torch.dropout}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_IDENTITY_METHODS = {"contiguous", "clone"}
_ADD_FUNCTIONS = {torch.add, torch.sub, operator.add, operator.sub, operator.iadd, operator.isub}
_ADD_METHODS = {"add", "add_", "sub", "sub_"}


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a call_module node calls, else ``None``."""
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def describe(gm: fx.GraphModule, node: fx.Node, prefix: str = "") -> str:
    """A short human name: the module's qualified name (under ``prefix``, the traced piece's
    place in the whole model), or the function as written in code."""
    if node.op == "call_module":
        return f"{prefix}.{node.target}" if prefix else str(node.target)
    if node.op == "call_method":
        return f".{node.target}()"
    target = node.target
    module = getattr(target, "__module__", "") or ""
    name = getattr(target, "__name__", str(target))
    if module.startswith("torch.nn.functional") or getattr(F, name, None) is target:
        return f"F.{name}"  # F.conv2d is torch.conv2d: name it as the documented API does
    if module.startswith("_operator") or module == "operator":
        return {"add": "+", "iadd": "+=", "sub": "-", "isub": "-="}.get(name, name)
    return f"torch.{name}" if module.startswith("torch") else name


def label(gm: fx.GraphModule, node: fx.Node, prefix: str = "") -> str:
    """How a message names a node: ``Conv2d `features.0``` for a module, ```F.conv2d(...)```
    for a function, as it is called, and ```.relu()``` for a method."""
    name = describe(gm, node, prefix)
    if node.op == "call_module":
        return f"{type(module_of(gm, node)).__name__} `{name}`"
    if node.op == "call_function" and name[:1].isalpha():
        return f"`{name}(...)`"
    return f"`{name}`"


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The shape of the tensor ``node`` computes, where an example input let it be recorded
    (``node.meta["tensor_meta"]``, as ``torch.fx.passes.shape_prop`` leaves it), else ``None``."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def type_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """The layer's class name for modules (``Conv2d``), the function name otherwise."""
    module = module_of(gm, node)
    return type(module).__name__ if module is not None else describe(gm, node)


def is_batchnorm(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module_of(gm, node), _BatchNorm)
    return node.op == "call_function" and node.target in BATCHNORM_FUNCTIONS


def batchnorm_channels(module: nn.Module | None) -> int | None:
    """A BatchNorm module's number of channels, where it is known: not for anything else
    (``None`` for a functional call), nor for a lazy BatchNorm before its first call."""
    if not isinstance(module, _BatchNorm) or any(
            nn.parameter.is_lazy(getattr(module, name)) for name in ("weight", "running_mean")):
        return None
    return module.num_features


def is_biased_layer(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A conv/linear layer whose bias is present (module attribute or functional argument)."""
    if node.op == "call_module":
        module = module_of(gm, node)
        return isinstance(module, BIASED_LAYER_TYPES) and getattr(module, "bias", None) is not None
    if node.op == "call_function" and node.target in BIASED_LAYER_FUNCTIONS:
        position = BIASED_LAYER_FUNCTIONS[node.target]
        bias = node.kwargs.get("bias", node.args[position] if len(node.args) > position else None)
        return bias is not None
    return False


def own_forward(layer: nn.Module) -> str | None:
    """``forward`` or ``_conv_forward``, whichever the layer's class defines outside torch.nn
    first: a subclass that computes its output its own way (with its weight and bias, or not);
    ``None`` for torch's own layers."""
    for name in ("forward", "_conv_forward"):
        method = getattr(type(layer), name, None)
        if method is not None and not method.__module__.startswith("torch.nn."):
            return name
    return None


def is_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module_of(gm, node), ACTIVATION_TYPES)
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ACTIVATION_METHODS


def _is_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = module_of(gm, node)
    if module is not None:
        if isinstance(module, _AVG_POOL_TYPES):
            return _no_padding(module.padding)
        return isinstance(module, _MAX_POOL_TYPES)
    if node.op != "call_function":
        return False
    if node.target in _AVG_POOL_FUNCTIONS:
        padding = node.kwargs.get("padding", node.args[3] if len(node.args) > 3 else 0)
        return _no_padding(padding)
    return node.target in _POOL_FUNCTIONS


def _no_padding(padding) -> bool:
    values = padding if isinstance(padding, (tuple, list)) else (padding,)
    return all(isinstance(v, int) and v == 0 for v in values)


def _is_dropout(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = module_of(gm, node)
    if module is not None:
        return isinstance(module, _DROPOUT_TYPES)
    return node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS


def _is_reshape(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = module_of(gm, node)
    if module is not None:
        return isinstance(module, (nn.Flatten, nn.Identity))
    if node.op == "call_function":
        return node.target in _RESHAPE_FUNCTIONS
    return node.op == "call_method" and node.target in _RESHAPE_METHODS | _IDENTITY_METHODS


def _is_flatten_keeping_batch(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Flatten that keeps dim 0, so a per-channel constant stays constant over the batch."""
    module = module_of(gm, node)
    if module is not None:
        return isinstance(module, nn.Identity) or (
            isinstance(module, nn.Flatten) and module.start_dim == 1
        )
    if node.op == "call_method" and node.target in _IDENTITY_METHODS:
        return True
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )
    if not is_flatten:
        return False
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    return start == 1


def _is_residual_add(node: fx.Node) -> bool:
    """``a + b`` or ``a - b`` (no ``alpha`` scaling): a constant in either stays a constant."""
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS)
    return is_add and "alpha" not in node.kwargs


def carries_bias_shift(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that pass a per-channel constant shift through unchanged, so BatchNorm after
    them still removes it: max/adaptive pooling, average pooling without padding,
    flatten from dim 1, identity, and residual addition."""
    return _is_pool(gm, node) or _is_flatten_keeping_batch(gm, node) or _is_residual_add(node)


_SUB_TARGETS = {torch.sub, __import__("operator").sub, __import__("operator").isub, "sub", "sub_"}


def passthrough_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """What one of the ops that ``carries_bias_shift`` or ``carries_activation`` does to its
    input's layout: "dropout", "pool", "identity", "flatten" (from dim 1), "reshape" (any other
    flatten, view or reshape), "add", or "sub" (which negates its second operand); ``None`` for
    every other op. The fixes need to know which, the checks only that it passes through."""
    if _is_residual_add(node):
        return "sub" if node.target in _SUB_TARGETS else "add"
    if _is_dropout(gm, node):
        return "dropout"
    if _is_pool(gm, node):
        return "pool"
    module = module_of(gm, node)
    if isinstance(module, nn.Identity) or (
            node.op == "call_method" and node.target in _IDENTITY_METHODS):
        return "identity"
    if _is_flatten_keeping_batch(gm, node):
        return "flatten"
    return "reshape" if _is_reshape(gm, node) else None


def carries_activation(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that leave "BatchNorm sees an activation's output" true: dropout, pooling,
    flatten/reshape/view, identity."""
    return _is_dropout(gm, node) or _is_pool(gm, node) or _is_reshape(gm, node)


def tensor_input(node: fx.Node) -> fx.Node | None:
    """The data input of a single-input op (its first positional argument, if a node)."""
    first = node.args[0] if node.args else node.kwargs.get("input")
    return first if isinstance(first, fx.Node) else None


def node_inputs(node: fx.Node) -> Iterator[fx.Node]:
    for arg in node.args:
        if isinstance(arg, fx.Node):
            yield arg


def operands(node: fx.Node) -> Iterator[tuple[int, fx.Node]]:
    """(position, node) of a node's tensor operands, ``other=`` counting as position 1."""
    for i, arg in enumerate(node.args):
        if isinstance(arg, fx.Node):
            yield i, arg
    for name, i in (("input", 0), ("other", 1)):
        if isinstance(node.kwargs.get(name), fx.Node):
            yield i, node.kwargs[name]


def by_target(gm: fx.GraphModule) -> dict[tuple[str, str], list[fx.Node]]:
    """Every module call and attribute read, by ``(op, target)``, in graph order: one pass over
    the graph for a rule that asks about many targets (``calls_of`` walks it per question)."""
    found: dict[tuple[str, str], list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            found.setdefault((node.op, node.target), []).append(node)
    return found


def calls_of(gm: fx.GraphModule, target: str) -> list[fx.Node]:
    """Every node that calls the module at ``target`` (a shared layer has several)."""
    return [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target]


_ALPHA_DROPOUT_TYPES = (nn.AlphaDropout, nn.FeatureAlphaDropout)
_ALPHA_DROPOUT_FUNCTIONS = {F.alpha_dropout, F.feature_alpha_dropout}


def dropout_rate(gm: fx.GraphModule, node: fx.Node) -> float | None:
    """How likely a dropout node zeroes a value in training: its ``p``, 0 for a functional call
    written with ``training=False``; ``None`` for anything that is not a dropout, and for alpha
    dropout, which keeps the mean and variance of its input. A ``p`` that is itself computed
    counts as 0.5, torch's default."""
    if not _is_dropout(gm, node):
        return None
    module = module_of(gm, node)
    if isinstance(module, _ALPHA_DROPOUT_TYPES) or node.target in _ALPHA_DROPOUT_FUNCTIONS:
        return None
    if module is not None:
        return float(module.p)
    positional = node.target is torch.dropout  # torch.dropout(input, p, train), all required
    p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
    name = "train" if positional else "training"
    training = node.kwargs.get(name, node.args[2] if len(node.args) > 2 else True)
    if training is False:
        return 0.0
    return float(p) if isinstance(p, (int, float)) else 0.5


# --- ranks and shapes --------------------------------------------------------------------------

_KEEPS_RANK_TYPES = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.LayerNorm, nn.GroupNorm,
                     _BatchNorm, nn.Identity, *_DROPOUT_TYPES)


def spatial_dims(op) -> int | None:
    """How many trailing dimensions a convolution or pooling (a module, or the function a
    node calls) works over: 1, 2 or 3."""
    if isinstance(op, nn.modules.conv._ConvNd):
        return len(op.kernel_size)
    names = ([cls.__name__ for cls in type(op).__mro__] if isinstance(op, nn.Module)
             else [getattr(op, "__name__", "")])
    for name in names:
        match = re.search(r"([123])d_?$", name)
        if match:
            return int(match[1])
    return None


def flatten_dims(gm: fx.GraphModule, node: fx.Node) -> tuple[int, int] | None:
    """``(start_dim, end_dim)`` of a flatten (module, function or method), else ``None``."""
    module = module_of(gm, node)
    if isinstance(module, nn.Flatten):
        return module.start_dim, module.end_dim
    is_flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten")
    if not is_flatten:
        return None
    start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
    end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return (start, end) if isinstance(start, int) and isinstance(end, int) else None


def _reshaped_rank(node: fx.Node) -> int | None:
    """The rank a view/reshape asks for when its sizes are written out (``x.view(n, -1)``)."""
    if node.op == "call_method" and node.target in ("view", "reshape"):
        sizes = node.args[1:]
    elif node.op == "call_function" and node.target is torch.reshape:
        sizes = node.args[1:] or (node.kwargs.get("shape"),)
    else:
        return None
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        return len(sizes[0])
    return len(sizes) if sizes and not any(isinstance(s, (tuple, list)) for s in sizes) else None


_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp", "prod"}


def _reduced_dims(node: fx.Node) -> int | None:
    """How many dimensions a reduction (``x.mean((2, 3))``, ``torch.sum(x, 1)``) drops."""
    if node.op == "call_method":
        name = node.target
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        if node.target is not getattr(torch, name, None):
            return None
    else:
        return None
    if name not in _REDUCTIONS:
        return None
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    if keepdim is True:
        return 0
    if isinstance(dims, int):
        return 1
    if isinstance(dims, (tuple, list)) and all(isinstance(d, int) for d in dims):
        return len(dims)
    return None


def _rank_rule(gm: fx.GraphModule, node: fx.Node) -> int | tuple[int, list[fx.Node]] | None:
    """A node's rank: known (an int), the largest rank of some inputs plus a number (a tuple),
    or unknown (``None``)."""
    shape = shape_of(node)
    if shape is not None:
        return len(shape)
    if is_batchnorm(gm, node) and node.op == "call_module":
        spatial = spatial_dims(module_of(gm, node))
        if spatial is not None and spatial > 1:
            return spatial + 2  # BatchNorm2d accepts only 4-D input, BatchNorm3d only 5-D
    reduced = _reduced_dims(node)
    if reduced is not None:
        source = tensor_input(node)
        return (-reduced, [source]) if source is not None else None
    dims = flatten_dims(gm, node)
    if dims is not None:
        start, end = dims
        return start + 1 if end == -1 and start >= 0 else None
    reshaped = _reshaped_rank(node)
    if reshaped is not None:
        return reshaped
    source = tensor_input(node)
    if isinstance(module_of(gm, node), nn.Embedding):
        return (1, [source]) if source is not None else None
    if _is_residual_add(node):
        return 0, [n for _, n in operands(node)]
    keeps = (isinstance(module_of(gm, node), _KEEPS_RANK_TYPES) or is_batchnorm(gm, node)
             or is_activation(gm, node) or _is_dropout(gm, node)
             or passthrough_kind(gm, node) in ("identity", "pool")
             or (node.op == "call_function" and node.target in BIASED_LAYER_FUNCTIONS))
    return (0, [source]) if keeps and source is not None else None


def from_inputs(node: fx.Node, rule, memo: dict):
    """A property of ``node`` that follows from the same property of some of its inputs,
    worked out without recursion (graphs are thousands of nodes deep) and once per node
    (``memo`` keeps every node's, for the next question). ``rule(n)`` returns ``(inputs,
    combine)``: ``n``'s property is ``combine([the property of each input])``."""
    pending: dict[fx.Node, tuple] = {}
    stack = [node]
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        if current not in pending:
            pending[current] = rule(current)
        inputs, combine = pending[current]
        missing = [n for n in inputs if n not in memo]
        if missing:
            stack.extend(missing)
            continue
        memo[current] = combine([memo[n] for n in inputs])
        stack.pop()
    return memo[node]


def rank_of(gm: fx.GraphModule, node: fx.Node, memo: dict[fx.Node, int | None]) -> int | None:
    """The number of dimensions of ``node``'s value: recorded where an example input gave
    shapes, else worked out from the ops that fix it (a flatten from dim 1 gives 2,
    ``x.view(n, -1)`` 2, ``x.mean((2, 3))`` two fewer, BatchNorm2d 4) through those that keep
    it (layers, norms, activations, dropout, pooling, sums). ``memo`` as for ``from_inputs``."""
    def rule(n: fx.Node):
        found = _rank_rule(gm, n)
        if not isinstance(found, tuple):
            return (), lambda _: found
        extra, inputs = found
        return inputs, lambda ranks: max(ranks) + extra if ranks and None not in ranks else None

    return from_inputs(node, rule, memo)


class Index:
    """What rules ask of one graph, worked out once for all their questions: the rank of
    values (``rank_of``), the module each node calls, and the nodes that call a module or
    read an attribute, by target. Build a new one after changing the graph."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.ranks: dict[fx.Node, int | None] = {}
        self._targets: dict[tuple[str, str], list[fx.Node]] | None = None
        self._modules: dict[str, nn.Module] | None = None

    def module(self, node: fx.Node) -> nn.Module | None:
        """``module_of``, from one walk over the graph's modules instead of one lookup each."""
        if node.op != "call_module":
            return None
        if self._modules is None:
            self._modules = dict(self.gm.named_modules())
        return self._modules[node.target]

    def nodes(self, op: str, target: str) -> list[fx.Node]:
        if self._targets is None:
            self._targets = by_target(self.gm)
        return self._targets.get((op, target), [])

    def rank(self, node: fx.Node) -> int | None:
        return rank_of(self.gm, node, self.ranks)
