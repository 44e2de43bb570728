"""Small queries on a traced graph: what a node is, where its value comes from and goes to.

Every helper takes the ``GraphModule`` that owns the node, so call_module targets can be
resolved to the module objects they call.
"""

from __future__ import annotations

import operator
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
